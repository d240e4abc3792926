#!/bin/bash
out=/tmp/rc/res
for w in readcpu-base readcpu-bench; do
  tag=$([ $w = readcpu-base ] && echo main || echo branch)
  f=$out/node_1M_${tag}_3.jsonl
  echo "# $(date -u +%FT%TZ) $w $(git -C /work/wt/$w rev-parse --short HEAD) uptime: $(uptime)" > $f
  (cd /work/wt/$w && .venv/bin/python -m bench.bench_prepaid --node --meters 1000000 --groups 2 --runs 3 >> $f 2>$out/node_1M_${tag}_3.err)
  echo "# end $(date -u +%FT%TZ) uptime: $(uptime)" >> $f
done
