#!/bin/bash
# the micro bench (unpack, handle, pack of one read), main and the branch alternated, same script
out=/tmp/rc/res/micro_read_cpu.jsonl
cp /work/wt/readcpu/bench/bench_prepaid_memory.py /tmp/rc/bpm.py
: > $out
for i in 1 2 3; do
  for w in readcpu-base readcpu; do
    tag=$([ $w = readcpu-base ] && echo main || echo branch)
    echo "# $(date -u +%FT%TZ) $tag $(git -C /work/wt/$w rev-parse --short HEAD) uptime: $(uptime)" >> $out
    (cd /work/wt/$w && .venv/bin/python -c "
import sys, runpy; sys.argv=['bench_prepaid_memory','--runs','0','--cpu']; runpy.run_path('/tmp/rc/bpm.py', run_name='__main__')" | sed "s/^{/{\"tree\": \"$tag\", /" >> $out)
  done
done
