#!/usr/bin/env bash
# Runs every kp test: unit tests, the sandbox and CLI tests, the guest-language tests, and the
# end-to-end tests against a real Apache Kafka broker. Works on a fresh machine: it installs the
# guest toolchains (scripts/toolchains.sh: wasm32-wasip2, clang + wasi-libc, componentize-js,
# componentize-py), fetches and starts Kafka (scripts/kafka.sh) if none is running, and stops the
# broker again if it started it.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test sandbox`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Go's own installer puts it in /usr/local/go/bin, which a non-login shell may not have on PATH.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
cd "$root"

scripts/toolchains.sh

started_kafka=0
if ! scripts/kafka.sh status; then
  scripts/kafka.sh start
  started_kafka=1
fi
stop_kafka() { if [ "$started_kafka" = 1 ]; then scripts/kafka.sh stop; fi; }
trap stop_kafka EXIT

# Two test threads: the end-to-end tests run kp processes and a broker on a 2-core machine.
# --include-ignored: the tests that need the broker or the guest toolchains are #[ignore]d, so a
# bare `cargo test` (the fast tier: unit, sandbox and CLI tests) passes without them and lists
# each one it skipped with the reason; here everything is set up, so they all run.
cargo test --workspace "$@" -- --include-ignored --test-threads 2
