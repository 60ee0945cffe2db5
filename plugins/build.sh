#!/usr/bin/env bash
# Builds the example Rust plugins for wasm32-wasip2 and lays them out as a kp plugins directory:
#   OUT_DIR/NAME.wasm + OUT_DIR/NAME.toml   for each example (uppercase, filter, router, passthrough, chaos)
#   OUT_DIR/testing/*.wasm                  guests used only by the tests (wrong-world, tag-a, tag-b)
# Usage: plugins/build.sh [OUT_DIR]   (default: target/plugins/dist at the repository root)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$root/target/plugins/dist}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "build.sh: adding the wasm32-wasip2 target (once)" >&2
  rustup target add wasm32-wasip2 >&2
fi
# Guests get their own target folder (beside the host's), so host and guest builds never
# invalidate each other; CARGO_TARGET_DIR (used by CI to keep a cache) moves both.
target=${CARGO_TARGET_DIR:-$root/target}/plugins
(cd "$here" && CARGO_TARGET_DIR=$target cargo build --release --quiet)
built=$target/wasm32-wasip2/release
mkdir -p "$out/testing"
for manifest in "$here"/*/*.toml; do
  name=$(basename "$manifest" .toml)
  [ "$name" = Cargo ] && continue
  # Copy to a temporary name then rename, so a kp watching OUT_DIR never sees half a file.
  cp "$built/$name.wasm" "$out/.$name.wasm.tmp" && mv "$out/.$name.wasm.tmp" "$out/$name.wasm"
  cp "$manifest" "$out/$name.toml"
done
for t in wrong_world tag_a tag_b; do cp "$built/$t.wasm" "$out/testing/${t//_/-}.wasm"; done
echo "$out"
