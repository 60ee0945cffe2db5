#!/usr/bin/env bash
# Installs the guest toolchains the tests build with, on a fresh machine, and what building kp needs
# beyond Rust:
#   kp itself:  OpenSSL's and libcurl's headers and pkg-config (librdkafka's TLS, and OIDC token fetching;
#               Debian packages libssl-dev, libcurl4-openssl-dev, pkg-config)
#   Tests:      kcat (Debian package: an independent Kafka client; it writes records rdkafka cannot),
#               prometheus (Debian package: scrapes kp's /metrics as an operator's would)
#   Rust:       the wasm32-wasip2 target (rustup)
#   C:          clang, lld, wasi-libc, libclang-rt-dev-wasm32 (Debian packages; needs root or sudo)
#   Go:         Go 1.24 or newer on PATH (go:wasmexport); not installed here, only checked: the
#               project's machines have it (/usr/local/go); elsewhere, https://go.dev/dl
#   JavaScript: componentize-js into guest-sdk/js/node_modules (npm ci, from package-lock.json)
#   Python:     componentize-py into guest-sdk/python/.venv (pip, from requirements.txt)
# Idempotent: what is there already is left alone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Go's own installer puts it in /usr/local/go/bin, which a non-login shell may not have on PATH.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
apt_install() {
  $sudo apt-get install -y -q "$@" >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$@" >/dev/null; }
}

if ! pkg-config --exists openssl libcurl 2>/dev/null; then
  echo "toolchains.sh: installing OpenSSL's and libcurl's headers and pkg-config (Debian packages)" >&2
  apt_install libssl-dev libcurl4-openssl-dev pkg-config
fi

if ! command -v prometheus >/dev/null; then
  echo "toolchains.sh: installing prometheus (Debian package: the tests scrape kp's /metrics with it)" >&2
  apt_install --no-install-recommends prometheus
fi
if ! command -v kcat >/dev/null; then
  echo "toolchains.sh: installing kcat (Debian package)" >&2
  apt_install kcat
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null || [ ! -f /usr/include/wasm32-wasi/stdio.h ]; then
  echo "toolchains.sh: installing clang, lld and wasi-libc (Debian packages)" >&2
  apt_install clang lld wasi-libc libclang-rt-dev-wasm32
fi

if [ ! -d "$root/guest-sdk/js/node_modules/@bytecodealliance/componentize-js" ]; then
  echo "toolchains.sh: installing componentize-js" >&2
  (cd "$root/guest-sdk/js" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -x "$root/guest-sdk/python/.venv/bin/componentize-py" ]; then
  echo "toolchains.sh: installing componentize-py" >&2
  python3 -m venv "$root/guest-sdk/python/.venv"
  "$root/guest-sdk/python/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/guest-sdk/python/requirements.txt"
fi

# Go is checked, not installed: Debian's golang package is older than 1.24 on some releases.
go_minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt 24 ]; then
  echo "toolchains.sh: Go 1.24 or newer is needed for Go handlers (found: $(go env GOVERSION 2>/dev/null || echo none)); get it from https://go.dev/dl and put it on PATH" >&2
  exit 1
fi
