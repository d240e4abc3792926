#!/bin/bash
f=/tmp/rc/res/node_crore_branch.jsonl
{ echo "# $(date -u +%FT%TZ) readcpu-bench $(git -C /work/wt/readcpu-bench rev-parse --short HEAD) uptime: $(uptime)"; free -m; } > $f
(cd /work/wt/readcpu-bench && .venv/bin/python -m bench.bench_prepaid --node --meters 10000000 --groups 2 --runs 1 >> $f 2>/tmp/rc/res/node_crore_branch.err)
{ echo "# end $(date -u +%FT%TZ) uptime: $(uptime)"; free -m; } >> $f
