#!/usr/bin/env bash
# Builds {{name}}.wasm (a kp handler component) from this Rust project.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2
target=${CARGO_TARGET_DIR:-target}
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm.tmp && mv {{name}}.wasm.tmp {{name}}.wasm
echo "built {{name}}.wasm" >&2
