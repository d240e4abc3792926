#!/usr/bin/env bash
# The session-8 A/B series (after = this branch, before = main 097ecbe in /work/wt/perf-base), alternating.
set -u
R=/work/wt/perf/bench/results/issue13-s8
A=/work/wt/perf; B=/work/wt/perf-base
RT="bench.bench_runtime --meters 200000 --throughput-payments 50000 --runs 3 --skip-recovery"
W="bench.bench_webhooks --meters 400000 --requests 90000 --runs 3 --format razorpay --generator wrk --duration 12"
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then first=after; fa=$A; second=before; fb=$B; else first=before; fa=$B; second=after; fb=$A; fi
  $R/run.sh $first $fa $R/runtime-sqlite-ab.txt $RT
  $R/run.sh $second $fb $R/runtime-sqlite-ab.txt $RT
done
for i in 1 2 3; do
  if [ $((i % 2)) = 1 ]; then first=after; fa=$A; second=before; fb=$B; else first=before; fa=$B; second=after; fb=$A; fi
  $R/run.sh $first $fa $R/webhooks-ab.txt $W
  $R/run.sh $second $fb $R/webhooks-ab.txt $W
done
for i in 1 2; do
  if [ $((i % 2)) = 1 ]; then first=after; fa=$A; second=before; fb=$B; else first=before; fa=$B; second=after; fb=$A; fi
  $R/run.sh $first $fa $R/runtime-postgresql-ab.txt $RT --storage postgresql
  $R/run.sh $second $fb $R/runtime-postgresql-ab.txt $RT --storage postgresql
done
echo "series done $(date -u +%H:%M:%S)" >> $R/series.log
