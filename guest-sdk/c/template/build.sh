#!/usr/bin/env bash
# Builds {{name}}.wasm (a kp handler component) from handler.c: clang + wasi-libc, then
# `kp componentize` (kp on PATH, or KP=/path/to/kp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
exec sdk/build.sh {{name}}.wasm handler.c
