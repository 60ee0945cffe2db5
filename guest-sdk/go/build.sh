#!/usr/bin/env bash
# Builds a Go kp handler into a component: build.sh OUT.wasm [PACKAGE_DIR]
# Needs Go 1.24 or newer (go:wasmexport; the machines here have 1.26) and the kp binary (on PATH,
# or $KP), whose `kp componentize` turns the core module into a component. KP_GO_TAGS adds build
# tags (the SDK's stress test uses it to build the deliberately unsound allocator).
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 OUT.wasm [PACKAGE_DIR]" >&2; exit 2; fi
out=$(realpath -m "$1")
pkg=${2:-.}
kp=${KP:-kp}
command -v go >/dev/null || { echo "build.sh: go not found (Go 1.24 or newer: https://go.dev/dl)" >&2; exit 1; }
command -v "$kp" >/dev/null || { echo "build.sh: kp not found: put it on PATH or set KP=/path/to/kp" >&2; exit 1; }
core=$(mktemp --suffix .core.wasm)
trap 'rm -f "$core"' EXIT
# c-shared: a WASI reactor (no main loop) whose go:wasmexport functions are kp's handler.
# -checklinkname=0: the SDK's allocator reaches runtime.sbrk (see alloc.go, and why it is sound).
(cd "$pkg" && GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
  -ldflags=-checklinkname=0 ${KP_GO_TAGS:+-tags "$KP_GO_TAGS"} -o "$core" .)
"$kp" componentize "$core" -o "$out"
