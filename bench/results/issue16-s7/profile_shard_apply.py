"""One-off profile (issue 16, helper prepdemo): where a shard group's CPU per prepaid read goes.

A 1-group fleet of 100 000 prepaid meters generated as bench_prepaid --node does, recovered by a
`ShardService` in this process (as `MeterShard` does), then one day's reads applied in batches of 10 000
the way the shard actor handles a `MeterCommandBatch`: `codec.decode_each` of the payload, then
`ShardService.apply` (decide, journal commit, assign). Wall and cProfile by function (cumulative).
`python bench/results/issue16-s7/profile_shard_apply.py`
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from actors.shard_service import ShardService
from bench.bench_fleet import FleetSpec, account, generate, serial
from bench.bench_prepaid_node import read_days
from domain.commands import ReportConsumption
from domain.policy import load_policy
from headend.sim.load import daily_wh, read_id
from protocols import codec
from storage.api import StoreOptions
from storage.sqlite import open_shard_store

N = 100_000
work = Path(tempfile.mkdtemp(prefix="jodo-prof-"))
today = datetime.now(ZoneInfo("Asia/Kolkata")).date()
held, days = read_days(1, today)
spec = FleetSpec(meters=N, groups=1, now=int(time.time()), prepaid_days=held)
generate(work / "data", spec, workers=1)
store = open_shard_store(work / "data", 0, StoreOptions(synchronous="normal"))
service = ShardService(group=0, groups=1, shards=spec.shards, store=store, policy=load_policy())
service.recover(int(time.time()))
day = days[0]
payloads = []
for lo in range(0, N, 10_000):
    records = [ReportConsumption(account=account(i), read_id=read_id(serial(i), day),
                                 read_date=day.isoformat(), energy_wh=daily_wh(1, serial(i), day))
               for i in range(lo, lo + 10_000)]
    payloads.append(codec.encode_many(records))
prof = cProfile.Profile()
started, cpu = time.perf_counter(), time.process_time()
prof.enable()
for p in payloads:
    commands = [c for c in codec.decode_each(p) if not isinstance(c, Exception)]
    out = service.apply(commands, int(time.time()))
    assert not out.rejected, out.rejected[:3]
prof.disable()
took, used = time.perf_counter() - started, time.process_time() - cpu
print(f"{N} reads: {took:.2f} s wall, {used:.2f} s CPU, {used * 1e6 / N:.1f} us CPU/read (profiled: cProfile "
      "inflates it)")
pstats.Stats(prof).sort_stats("cumulative").print_stats(35)
pstats.Stats(prof).sort_stats("tottime").print_stats(25)
store.close()
