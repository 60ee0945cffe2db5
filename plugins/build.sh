#!/usr/bin/env bash
# Builds the example plugins and lays them out as a kp plugins directory:
#   OUT_DIR/NAME.wasm + OUT_DIR/NAME.toml   for each example
#   OUT_DIR/testing/*.wasm                  Rust guests used only by the tests (wrong-world, tag-a, tag-b)
# Usage: plugins/build.sh [--lang LANGS | --all] [OUT_DIR]   (default: Rust only, into
#        target/plugins/dist at the repository root). LANGS is a comma-separated subset of
#        rust,js,python,c; --all means all of them:
#   rust:   uppercase, filter, router, passthrough, chaos   (cargo, wasm32-wasip2)
#   js:     order-router   (plugins/js; node + npm, guest-sdk/js installs componentize-js)
#   python: redact         (plugins/python; python3, guest-sdk/python installs componentize-py)
#   c:      metrics        (plugins/c; clang + wasi-libc, then `kp componentize`: set KP or
#                           have kp on PATH, else the workspace's kp is built)
#   go:     sessions       (plugins/go; Go 1.24+, then `kp componentize`, as for C), and the
#                           SDK's stress guest as testing/go-stress.wasm
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
langs=rust
case "${1:-}" in
  --all) langs=rust,js,python,c,go; shift ;;
  --lang) langs=$2; shift 2 ;;
esac
out=${1:-$root/target/plugins/dist}
mkdir -p "$out/testing"
# Guests get their own target folder (beside the host's), so host and guest builds never
# invalidate each other; CARGO_TARGET_DIR (used by CI to keep a cache) moves both.
target_root=${CARGO_TARGET_DIR:-$root/target}

# C and Go core modules become components through `kp componentize`: KP, or kp on PATH, else the
# workspace's kp is built.
need_kp() {
  if [ -z "${KP:-}" ] && ! command -v kp >/dev/null; then
    (cd "$root" && cargo build --quiet -p kp)
    export KP=$target_root/debug/kp
  fi
}

# Copies to a temporary name then renames, so a kp watching OUT_DIR never sees half a file.
install() { cp "$1" "$out/.$2.tmp" && mv "$out/.$2.tmp" "$out/$2"; }

for lang in ${langs//,/ }; do
  case $lang in
    rust)
      if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        echo "build.sh: adding the wasm32-wasip2 target (once)" >&2
        rustup target add wasm32-wasip2 >&2
      fi
      (cd "$here" && CARGO_TARGET_DIR=$target_root/plugins cargo build --release --quiet)
      built=$target_root/plugins/wasm32-wasip2/release
      for manifest in "$here"/*/*.toml; do
        name=$(basename "$manifest" .toml)
        [ "$name" = Cargo ] && continue
        install "$built/$name.wasm" "$name.wasm"
        install "$manifest" "$name.toml"
      done
      for t in wrong_world tag_a tag_b; do cp "$built/$t.wasm" "$out/testing/${t//_/-}.wasm"; done
      ;;
    js)
      "$root/guest-sdk/js/build.sh" "$here/js/order-router/handler.js" "$out/order-router.wasm"
      install "$here/js/order-router/order-router.toml" order-router.toml
      ;;
    python)
      "$root/guest-sdk/python/build.sh" "$here/python/redact/app.py" "$out/redact.wasm"
      install "$here/python/redact/redact.toml" redact.toml
      ;;
    c)
      need_kp
      "$root/guest-sdk/c/build.sh" "$out/metrics.wasm" "$here/c/metrics/metrics.c"
      install "$here/c/metrics/metrics.toml" metrics.toml
      ;;
    go)
      need_kp
      "$root/guest-sdk/go/build.sh" "$out/sessions.wasm" "$here/go/sessions"
      install "$here/go/sessions/sessions.toml" sessions.toml
      "$root/guest-sdk/go/build.sh" "$out/testing/go-stress.wasm" "$here/go/stress"
      cp "$here/go/stress/stress.toml" "$out/testing/go-stress.toml"
      ;;
    *) echo "build.sh: unknown language $lang (rust, js, python, c, go)" >&2; exit 2 ;;
  esac
done
echo "$out"
