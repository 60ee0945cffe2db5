#!/usr/bin/env bash
# Builds a C kp handler into a component: build.sh OUT.wasm SOURCE.c [SOURCE.c ...] [-- CFLAGS...]
# Needs clang, lld and wasi-libc (Debian: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)
# and the kp binary (on PATH, or $KP), whose `kp componentize` turns the core module into a component.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -lt 2 ]; then echo "usage: $0 OUT.wasm SOURCE.c [SOURCE.c ...] [-- CFLAGS...]" >&2; exit 2; fi
out=$1; shift
sources=(); cflags=()
while [ $# -gt 0 ]; do
  if [ "$1" = -- ]; then shift; cflags=("$@"); break; fi
  sources+=("$1"); shift
done
kp=${KP:-kp}
command -v clang >/dev/null || { echo "build.sh: clang not found (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)" >&2; exit 1; }
command -v "$kp" >/dev/null || { echo "build.sh: kp not found: put it on PATH or set KP=/path/to/kp" >&2; exit 1; }
# Debian's wasi-libc lives under /usr (include/wasm32-wasi, lib/wasm32-wasi); a wasi-sdk sets WASI_SYSROOT.
sysroot=${WASI_SYSROOT:-/usr}
core=$(mktemp --suffix .core.wasm)
trap 'rm -f "$core"' EXIT
clang --target=wasm32-wasi --sysroot="$sysroot" -mexec-model=reactor -O2 -Wall -Wextra -Werror \
  -Wno-unused-parameter -I"$here" -I"$here/bindings" \
  "$here/kp.c" "$here/bindings/handler_world.c" "${sources[@]}" "${cflags[@]}" -o "$core"
"$kp" componentize "$core" -o "$out"
