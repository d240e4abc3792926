#!/usr/bin/env bash
# Installs wrk (Debian package `wrk`), the load generator of `python -m bench.bench_webhooks --generator wrk`.
# Only the benchmarks use it; the tests do not. Idempotent: does nothing when wrk is already there.
set -euo pipefail

if ! command -v wrk >/dev/null 2>&1; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-bench-tools: need root or sudo to install wrk" >&2; exit 1; }
        as_root=(sudo)
    fi
    echo "install-bench-tools: installing wrk" >&2
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
fi
echo "wrk: $(command -v wrk)"
