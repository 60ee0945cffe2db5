#!/usr/bin/env bash
# Builds {{name}}.wasm (a kp handler component) from app.py with componentize-py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec sdk/build.sh app.py {{name}}.wasm
