#!/usr/bin/env bash
# run.sh <label> <worktree> <outfile> <bench module> [args...]: one invocation, the load before and after.
set -u
label=$1 wt=$2 out=$3 mod=$4; shift 4
echo "== $label $(cd "$wt" && git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)" >> "$out"
(cd "$wt" && .venv/bin/python -m "$mod" "$@") >> "$out" 2>/dev/null
echo "== end $label load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)" >> "$out"
