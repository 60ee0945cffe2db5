#!/usr/bin/env bash
# Builds {{name}}.wasm (a kp handler component) from this Go module. Needs Go 1.24+ and kp on PATH
# (or KP=/path/to/kp): `kp componentize` turns Go's WASI core module into a component.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec sdk/build.sh {{name}}.wasm .
