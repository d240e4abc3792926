#!/bin/bash
# alternate main (readcpu-base) and the branch (readcpu-bench) through the 10 lakh node bench
out=/tmp/rc/res
for i in 1 2; do
  for w in readcpu-base readcpu-bench; do
    tag=$([ $w = readcpu-base ] && echo main || echo branch)
    f=$out/node_1M_${tag}_$i.jsonl
    echo "# $(date -u +%FT%TZ) $w $(git -C /work/wt/$w rev-parse --short HEAD) uptime: $(uptime)" > $f
    (cd /work/wt/$w && .venv/bin/python -m bench.bench_prepaid --node --meters 1000000 --groups 2 --runs 3 >> $f 2>$out/node_1M_${tag}_$i.err)
    echo "# end $(date -u +%FT%TZ) uptime: $(uptime)" >> $f
  done
done
