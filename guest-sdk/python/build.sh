#!/usr/bin/env bash
# Builds a Python kp handler into a component: build.sh APP_DIR/MODULE.py OUT.wasm
# The app module must `from kp_guest import Handler`. Installs componentize-py (requirements.txt)
# into .venv beside this script on first use.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 2 ]; then echo "usage: $0 APP.py OUT.wasm" >&2; exit 2; fi
app=$(cd "$(dirname "$1")" && pwd)
module=$(basename "$1" .py)
out=$2
wit=$here/wit
[ -f "$wit/kp.wit" ] || wit=$here/../../wit
if [ ! -x "$here/.venv/bin/componentize-py" ]; then
  echo "build.sh: installing componentize-py into $here/.venv (once)" >&2
  python3 -m venv "$here/.venv"
  "$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
start=$(date +%s)
# Write then rename, so a kp watching the output folder never sees half a module.
"$here/.venv/bin/componentize-py" -d "$wit" -w kp:plugin/handler-world@0.1.0 componentize "$module" \
  -p "$app" -p "$here" -o "$out.tmp" >&2
mv "$out.tmp" "$out"
echo "built $out ($(( $(stat -c %s "$out") / 1000000 )) MB) in $(( $(date +%s) - start )) s" >&2
