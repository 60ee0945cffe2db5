#!/usr/bin/env bash
# Builds {{name}}.wasm (a kp handler component) from handler.js with componentize-js.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec sdk/build.sh handler.js {{name}}.wasm
