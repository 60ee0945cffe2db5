#!/usr/bin/env bash
# Builds a JavaScript kp handler into a component: build.sh HANDLER.js OUT.wasm
# Installs componentize-js (pinned in package-lock.json) beside this script on first use.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 2 ]; then echo "usage: $0 HANDLER.js OUT.wasm" >&2; exit 2; fi
if [ ! -d "$here/node_modules/@bytecodealliance/componentize-js" ]; then
  echo "build.sh: installing componentize-js into $here/node_modules (once)" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
exec node "$here/build.mjs" "$1" "$2"
