"""`bench_prepaid --node`: one day's reads of a prepaid fleet debited through a real node (issue 16).

Described in bench/bench_prepaid.py (the command line is there). Asserts nothing; JSON lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bench.bench_fleet import FleetSpec, _all_meters, account, generate, serial, start_node
from bench.common import cpu_seconds, emit, proc_status, wait
from domain.commands import ReportConsumption
from headend.sim.load import daily_wh, read_id
from jodo.client import NodeClient
from jodo.node import Node
from protocols import codec
from protocols.runtime import MeterCommandBatch, MeterCommandBatchResult

__all__ = ["run_node"]

CRORE = 10_000_000
IST = ZoneInfo("Asia/Kolkata")


def read_days(runs: int, today: date) -> tuple[tuple[str, ...], list[date]]:
    """The days every meter holds already (this month's, before the first read day) and each run's read
    day (the last one yesterday: a read for the local today or later is refused)."""
    last = today - timedelta(days=1)
    days = [last - timedelta(days=runs - 1 - r) for r in range(runs)]
    if days[0].month != last.month:
        raise SystemExit(f"bench_prepaid --node: {runs} runs would read days of last month; run it later "
                         "in the month or with fewer runs")
    held = tuple((days[0].replace(day=1) + timedelta(d)).isoformat() for d in range(days[0].day - 1))
    return held, days


def _by_group(client: NodeClient, meters: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i in range(meters):
        out.setdefault(client.group_of(account(i)), []).append(i)
    return out


def _batch(indices: list[int], day: date) -> MeterCommandBatch:
    iso = day.isoformat()
    records = [ReportConsumption(account=account(i), read_id=read_id(serial(i), day), read_date=iso,
                                 energy_wh=daily_wh(1, serial(i), day)) for i in indices]
    return MeterCommandBatch(batch_id=uuid.uuid4().hex, payload=codec.encode_many(records))


def one_day(node: Node, client: NodeClient, groups: dict[int, list[int]], day: date, size: int,
            in_flight: int) -> dict[str, Any]:
    """Send every meter's read for ``day``; returns when every batch is answered."""
    pids = {ref.pid for ref in node.live_processes()}
    shard_pid = {g: client.shard_status(g).pid for g in groups}
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    own0 = time.process_time()
    runtime = client.runtime
    system = runtime._system  # as NodeClient.payment_answers: the endpoint is ours alone
    todo = {g: [ii[k:k + size] for k in range(0, len(ii), size)] for g, ii in groups.items()}
    out: dict[str, int] = {}  # batch id -> group
    accepted = rejected = batches = 0
    started = time.perf_counter()
    build_s = 0.0

    def send(g: int) -> None:
        nonlocal build_s
        t = time.perf_counter()
        batch = _batch(todo[g].pop(0), day)
        build_s += time.perf_counter() - t
        out[batch.batch_id] = g
        runtime.tell(client.shard[g], batch)

    for g in todo:
        for _ in range(in_flight):
            if todo[g]:
                send(g)
    while out:
        reply = system.listen(600.0)
        if reply is None:
            raise TimeoutError(f"no MeterCommandBatchResult in 600 s; {len(out)} batches outstanding")
        if not isinstance(reply, MeterCommandBatchResult) or reply.batch_id not in out:
            continue
        g = out.pop(reply.batch_id)
        accepted += reply.accepted
        rejected += len(reply.rejected)
        batches += 1
        if todo[g]:
            send(g)
    took = time.perf_counter() - started
    own = time.process_time() - own0
    reads = sum(len(ii) for ii in groups.values())
    cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
    shards = {g: cpu.get(pid, 0.0) for g, pid in shard_pid.items()}
    rest = sum(v for pid, v in cpu.items() if pid not in shard_pid.values())
    return {"day": day.isoformat(), "reads": reads, "batches": batches, "accepted": accepted,
            "rejected": rejected, "seconds": round(took, 2), "reads_per_s": round(reads / took),
            "sender_cpu_us_per_read": round(own * 1e6 / reads, 2),
            "sender_build_encode_s": round(build_s, 2),
            "shard_cpu_us_per_read": {g: round(v * 1e6 / max(1, len(groups[g])), 2)
                                      for g, v in shards.items()},
            "shards_cpu_us_per_read_total": round(sum(shards.values()) * 1e6 / reads, 2),
            "rest_of_node_cpu_us_per_read": round(rest * 1e6 / reads, 2),
            "shard_rss_mb": {g: round(proc_status(pid, "VmRSS") / 2**20, 1) for g, pid in shard_pid.items()},
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _check(client: NodeClient, meters: int, day: date) -> dict[str, int]:
    """A sample of meters: each holds the day's read (it was debited, not ignored or refused)."""
    step = max(1, meters // 200)
    held = missing = 0
    for i in range(0, meters, step):
        m = client.meter(account(i))
        ok = m is not None and m.prepaid is not None and any(
            d.read_id == read_id(serial(i), day) for d in m.prepaid.days)
        held += ok
        missing += not ok
    return {"sampled": held + missing, "holding_the_read": held}


def run_node(args: argparse.Namespace) -> None:
    today = datetime.now(IST).date()
    held, days = read_days(args.runs, today)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="jodo-prepaid-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = FleetSpec(meters=args.meters, groups=args.groups, now=int(time.time()), prepaid_days=held)
    node: Node | None = None
    try:
        emit(bench="prepaid_node", stage="start", meters=args.meters, groups=args.groups, runs=args.runs,
             batch=args.batch, in_flight=args.in_flight, held_days=len(held), read_days=[d.isoformat()
                                                                                     for d in days],
             cpus=os.cpu_count(), loadavg=[round(x, 2) for x in os.getloadavg()])
        started = time.perf_counter()
        stats = generate(work / "data", spec)
        emit(bench="prepaid_node", stage="generate", seconds=round(time.perf_counter() - started, 1),
             note="setup, not a jodo figure")
        expected = {int(s["group"]): int(s["meters"]) for s in stats}
        started = time.perf_counter()
        node = start_node(work / "data", args.groups, work / "node.log")
        client = NodeClient(node, groups=args.groups, timeout=600.0)
        wait(lambda: _all_meters(client, expected), 1800, "every group to answer with all its meters")
        emit(bench="prepaid_node", stage="cold_start", seconds=round(time.perf_counter() - started, 1))
        groups = _by_group(client, args.meters)
        runs = []
        for r, day in enumerate(days):
            record = one_day(node, client, groups, day, args.batch, args.in_flight)
            record.update(_check(client, args.meters, day))
            emit(bench="prepaid_node", stage="run", run=r, **record)
            runs.append(record)
        median = statistics.median(float(x["seconds"]) for x in runs)
        emit(bench="prepaid_node", summary=True, meters=args.meters, groups=args.groups, runs=len(runs),
             median_s=round(median, 2), reads_per_s=round(args.meters / median),
             us_per_read_wall=round(median * 1e6 / args.meters, 2),
             crore_extrapolated_s=round(median / args.meters * CRORE, 1),
             shards_cpu_us_per_read=statistics.median(x["shards_cpu_us_per_read_total"] for x in runs),
             sender_cpu_us_per_read=statistics.median(x["sender_cpu_us_per_read"] for x in runs),
             loadavg=[round(x, 2) for x in os.getloadavg()])
    finally:
        if node is not None:
            node.shutdown()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
