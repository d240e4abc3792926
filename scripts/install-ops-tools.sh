#!/usr/bin/env bash
# Installs the operations tools that tests/ops needs, from Debian packages:
#   promtool, prometheus  (package `prometheus`) -> check/test the scrape config, alert rules, /metrics output
#   systemd-analyze       (package `systemd`)    -> verify the unit files in deploy/systemd
#   initdb, pg_ctl        (package `postgresql`) -> the throwaway PostgreSQL servers of the storage contract
#                                                   suite and the cluster tests (jodo/pglocal.py)
#   ip                    (package `iproute2`)   -> the cluster tests' network faults
#   nft                   (package `nftables`)   -> deploy/cluster/firewall.nft is checked; the partition test
# Idempotent and quiet: does nothing (not even `apt-get update`) when every tool is already there; safe to
# re-run. Needs root (or sudo) only when something is missing. Prints where each tool is.
set -euo pipefail

tools=(promtool prometheus systemd-analyze initdb ip nft)
package_of() {
    case "$1" in
        promtool|prometheus) echo prometheus ;;
        systemd-analyze) echo systemd ;;
        initdb) echo postgresql ;;
        ip) echo iproute2 ;;
        nft) echo nftables ;;
    esac
}

# Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin
have() {
    if [ "$1" = initdb ]; then
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
    else
        command -v "$1" >/dev/null 2>&1
    fi
}

pkgs=()
for tool in "${tools[@]}"; do
    if ! have "$tool"; then
        pkg="$(package_of "$tool")"
        [[ " ${pkgs[*]} " == *" $pkg "* ]] || pkgs+=("$pkg")
    fi
done

if [ "${#pkgs[@]}" -gt 0 ]; then
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-ops-tools: need root or sudo to install: ${pkgs[*]}" >&2; exit 1; }
        as_root=(sudo)
    fi
    echo "install-ops-tools: installing ${pkgs[*]}" >&2
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    # No recommends: `prometheus` recommends node-exporter, which the tests do not need. Without systemd as
    # PID 1 the package's postinst cannot start the server; the tests start their own when they need one.
    if ! { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-ops-tools: apt-get failed" >&2
        exit 1
    fi
fi

for tool in "${tools[@]}"; do
    if [ "$tool" = initdb ]; then
        path="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)"
    else
        path="$(command -v "$tool" || true)"
    fi
    if [ -z "$path" ]; then
        echo "install-ops-tools: $tool still missing after install" >&2
        exit 1
    fi
    echo "$tool: $path"
done
