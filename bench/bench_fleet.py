"""A whole fleet on one node: `python -m bench.bench_fleet --meters N --groups G [--runs R] [--json]`.

Prints JSON lines (key "stage"), asserts nothing. Issue 7: resident bytes per meter, node RSS, cold
start (snapshot load) and one shard group's recovery after SIGKILL, at 7.25 lakh and 1 crore meters.

1. **generate** (setup, not a jodo figure): the fleet is written without the actors, one worker
   process per core, each opening its shard groups' stores the way `MeterShard` does. Meters are
   made by the domain: ``--via register`` sends every meter's commands through `ShardService.apply`
   (journaled, ~35 µs per meter); ``--via clone`` (default) registers one seed meter per logical shard
   through `ShardService.apply` (so every journal head is real), builds a prototype meter of each kind
   with `MeterHost.step`, and restores copies of it that differ only in the per-account fields
   (`MeterHost.restore`). Either way `ShardService.snapshot` then writes every logical shard's
   snapshot at its journal head, so a node recovers the fleet from snapshots alone.
   tests/unit/test_bench_fleet.py checks that both ways give equal meters.
   ``--billed-fraction``: meters that also have a bill and a payment (register, bill, pay in full
   before the due date: a bill record and a payment id resident, no timer due).
2. **empty_shard**: RSS of an empty shard group (a node started on an empty data dir), subtracted
   below.
3. **cold_start** (per run): a real node (`jodo.node.Node`, `jodo.tree.jodo_tree`, no head-end: the
   fleet is quiet, nothing is sent) on the generated data dir; seconds from ``node.start()`` until
   every group answers its status with all its meters; each group's own ``recovery_seconds``; VmRSS
   per shard group and summed over every process of the node; bytes per meter (shard RSS minus the
   empty group's, over its meters); VmHWM (peak RSS) and RssAnon of each shard group; CPU of the load.
   A shard's RSS includes its store's SQLite page cache: recovery reads the snapshots through a 2 MiB
   cache and then sizes it to the group and empties it (storage/sqlite_shard.py); before that, reading
   the snapshots filled the 64 MiB cache (+88 B a meter at 362 500).
4. **recovery** (per run): SIGKILL of shard group 0; seconds until it is running again with all
   its meters (the supervisor counts it running once it has recovered), and its ``recovery_seconds``.
5. **summary**: medians over the runs.

The data goes under a temp dir, deleted at the end unless ``--keep``. The page cache holds the files
just written: "cold" means a fresh process, not a cold disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import tempfile
import time
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from actors.facade import RuntimeConfig
from actors.shard_service import ShardService
from bench.common import cpu_seconds, emit, free_port, proc_status, wait
from domain.commands import (
    ClearPayment,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportConsumption,
    SetBillingMode,
)
from domain.enums import BillingMode
from domain.policy import Policy, load_policy
from domain.prepaid import with_days
from domain.shard import MeterHost
from domain.sharding import DEFAULT_LOGICAL_SHARDS, shards_of_group
from domain.state import Meter
from headend.sim.load import daily_wh, read_id
from jodo.client import NodeClient
from jodo.node import Node, NodeSetup
from jodo.tree import TreeOptions, jodo_tree, root_flags
from storage.api import StoreOptions
from storage.sqlite import SqliteBackend

__all__ = [
    "FleetSpec",
    "account",
    "commands_for",
    "generate",
    "is_billed",
    "start_node",
]

HEAD_END = "hes-1"
DUES = 150_000  # one bill, paise
CHUNK = 20_000  # commands per ShardService.apply (as the actors' MeterCommandBatch)
SHARDS_PER_PASS = 16  # logical shards held in memory at once by a generator worker


# ------------------------------------------------------------------ the fleet


def account(i: int) -> str:
    return f"N{i:010d}"  # as bench_runtime


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def bill_id(i: int) -> str:
    return f"B{i:010d}-1"


def payment_id(i: int) -> str:
    return f"pay-{i}"


def is_billed(i: int, fraction: float) -> bool:
    """Spread ``fraction`` of the meters evenly over the indices."""
    return int((i + 1) * fraction) > int(i * fraction)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSpec:
    meters: int
    groups: int
    now: int  # the clock every meter was generated at
    billed_fraction: float = 0.0
    shards: int = DEFAULT_LOGICAL_SHARDS
    via: str = "clone"  # or "register": every meter through ShardService.apply
    # prepaid meters (issue 16, bench_prepaid --node): every meter switched to prepaid with this opening
    # balance and holding these days' reads (ISO dates) already; None: postpaid
    prepaid_days: tuple[str, ...] | None = None
    prepaid_opening_paise: int = 500_000

    @property
    def due_date(self) -> str:
        """Twenty days after ``now``: the bills are paid in full well before they fall due."""
        return (dt.date.fromtimestamp(self.now) + dt.timedelta(days=20)).isoformat()


def commands_for(i: int, billed: bool, spec: FleetSpec) -> list[MeterCommand]:
    """What registers meter ``i`` (and bills it and takes its payment, if billed)."""
    a = account(i)
    out: list[MeterCommand] = [
        RegisterMeter(account=a, serial=serial(i), head_end=HEAD_END, install_year=2022,
                      relay_capable=True, control_mode=2)
    ]
    if spec.prepaid_days is not None:
        out.append(SetBillingMode(account=a, mode=BillingMode.PREPAID,
                                  opening_balance_paise=spec.prepaid_opening_paise, request_id=f"pp-{i}"))
        out += [ReportConsumption(account=a, read_id=read_id(serial(i), date.fromisoformat(d)), read_date=d,
                                  energy_wh=held_wh(d))
                for d in spec.prepaid_days]
    if billed:
        out.append(PostBill(account=a, bill_id=bill_id(i), amount_paise=DUES, due_date=spec.due_date,
                            issued_at=spec.now))
        out.append(ClearPayment(account=a, payment_id=payment_id(i), amount_paise=DUES, channel="upi",
                                cashless=True, paid_at=spec.now))
    return out


def held_wh(day: str) -> int:
    """The energy of a day a generated prepaid meter already holds: the same for every meter (clones
    share it; what a debit costs depends on how many days a meter holds, not on their energy)."""
    return daily_wh(1, "held", date.fromisoformat(day))


def _prototype(billed: bool, spec: FleetSpec, policy: Policy) -> Meter:
    """Meter 0's state, decided by the domain (nothing journaled)."""
    host = MeterHost(policy, spec.shards)
    step = host.step(commands_for(0, billed, spec), spec.now)
    return step.states[account(0)]


def _clone(proto: Meter, i: int) -> Meter:
    """``proto`` (meter 0) with meter ``i``'s own identifiers."""
    if proto.prepaid is not None:  # its own read ids (the energy of a held day is every meter's)
        s = serial(i)
        days = tuple(dataclasses.replace(d, read_id=read_id(s, date.fromisoformat(d.day)))
                     for d in proto.prepaid.days)
        prepaid = dataclasses.replace(with_days(proto.prepaid, days), mode_request_id=f"pp-{i}")
        return dataclasses.replace(proto, account=account(i), serial=s, prepaid=prepaid)
    if proto.bill is None:
        return dataclasses.replace(proto, account=account(i), serial=serial(i))
    return dataclasses.replace(
        proto, account=account(i), serial=serial(i),
        bill=dataclasses.replace(proto.bill, bill_id=bill_id(i)),
        recent_payment_ids=tuple(payment_id(i) if p == payment_id(0) else p
                                 for p in proto.recent_payment_ids),
    )


def _members(spec: FleetSpec, shards: frozenset[int]) -> dict[int, array[int]]:
    """Meter indices by logical shard, for these logical shards only (one pass over the fleet)."""
    out: dict[int, array[int]] = {s: array("q") for s in shards}
    n = spec.shards
    crc = zlib.crc32
    for i in range(spec.meters):
        s = crc(f"N{i:010d}".encode()) % n  # domain.sharding.logical_shard(account(i)), inlined
        if s in shards:
            out[s].append(i)
    return out


@dataclass(frozen=True, slots=True)
class _Job:
    data_dir: str
    spec: FleetSpec
    groups: tuple[int, ...]


def _generate_groups(job: _Job) -> list[dict[str, Any]]:
    """A worker: write the fleet of some shard groups. Returns one stats dict per group."""
    spec = job.spec
    policy = load_policy(None)
    protos = {False: _prototype(False, spec, policy), True: _prototype(True, spec, policy)}
    owned = {g: shards_of_group(g, spec.groups, spec.shards) for g in job.groups}
    members = _members(spec, frozenset(s for shards in owned.values() for s in shards))
    stats = []
    for group in job.groups:
        started, cpu = time.perf_counter(), time.process_time()
        store = SqliteBackend().open_shard_store(Path(job.data_dir), group,
                                                 StoreOptions(synchronous="normal"))
        meters = seeds = 0
        try:
            shards = owned[group]
            for lo in range(0, len(shards), SHARDS_PER_PASS):
                part = shards[lo : lo + SHARDS_PER_PASS]
                # a fresh service per pass keeps memory to a pass; its heads come from its own commits
                service = ShardService(group=group, groups=spec.groups, shards=spec.shards, store=store,
                                       policy=policy)
                for shard in part:
                    indices = members[shard]
                    if not indices:
                        continue
                    first = 1 if spec.via == "clone" else len(indices)
                    seeds += first
                    commands = [c for i in indices[:first] for c in
                                commands_for(i, is_billed(i, spec.billed_fraction), spec)]
                    for at in range(0, len(commands), CHUNK):
                        out = service.apply(commands[at : at + CHUNK], spec.now)
                        if out.rejected:
                            raise RuntimeError(f"group {group}: registration refused: {out.rejected[:3]}")
                    if spec.via == "clone":
                        service.host.restore(
                            (_clone(protos[is_billed(i, spec.billed_fraction)], i) for i in indices[first:]),
                            shard,
                        )
                    meters += len(indices)
                service.snapshot(part, spec.now)
        finally:
            store.close()
        stats.append({"group": group, "meters": meters, "journaled_meters": seeds,
                      "seconds": round(time.perf_counter() - started, 2),
                      "cpu_s": round(time.process_time() - cpu, 2)})
    return stats


def generate(data_dir: Path, spec: FleetSpec, workers: int | None = None) -> list[dict[str, Any]]:
    """Write the fleet under ``data_dir`` (one worker per core, each taking whole groups)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    procs = max(1, min(spec.groups, workers or os.cpu_count() or 1))
    jobs = [_Job(str(data_dir), spec, tuple(range(k, spec.groups, procs))) for k in range(procs)]
    if procs == 1:
        return _generate_groups(jobs[0])
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(_generate_groups, jobs)
    return sorted((s for r in results for s in r), key=lambda s: int(s["group"]))


# ------------------------------------------------------------------ the node


def start_node(data_dir: Path, groups: int, log_file: Path, ready_timeout: float = 1800.0) -> Node:
    """A real node on ``data_dir``, with no head-end (the fleet is quiet: nothing to send)."""
    options = TreeOptions(data_dir=str(data_dir), groups=groups, head_ends=())
    os.environ["JODO_DATA_DIR"] = options.data_dir
    node = Node(NodeSetup(runtime=RuntimeConfig(admin_port=free_port(), log_file=log_file),
                          root_flags=root_flags(), children=jodo_tree(options),
                          dead_letter_sink="actors.deadletters:stored_sink", ready_timeout=ready_timeout))
    return node.start()


def _all_meters(client: NodeClient, expected: dict[int, int]) -> bool:
    try:
        return all(client.shard_status(g).meters == n for g, n in expected.items())
    except Exception:  # a group not answering yet
        return False


def measure_node(node: Node, client: NodeClient, groups: int) -> dict[str, Any]:
    """RSS and CPU of the node's processes and of each shard group."""
    statuses = {g: client.shard_status(g) for g in range(groups)}
    pids = [ref.pid for ref in node.live_processes()]
    shard = {
        g: {"pid": s.pid, "meters": s.meters, "recovery_s": round(s.recovery_seconds, 3),
            "rss_kib": proc_status(s.pid, "VmRSS") // 1024, "hwm_kib": proc_status(s.pid, "VmHWM") // 1024,
            "anon_kib": proc_status(s.pid, "RssAnon") // 1024,
            "cpu_s": round(cpu_seconds(s.pid), 2)}
        for g, s in statuses.items()
    }
    return {
        "shards": shard,
        "node_rss_kib": sum(proc_status(p, "VmRSS") // 1024 for p in pids),
        "node_hwm_kib": sum(proc_status(p, "VmHWM") // 1024 for p in pids),
        "processes": len(pids),
    }


def empty_shard_rss(work: Path, groups: int) -> tuple[int, int]:
    """(median shard group VmRSS, node VmRSS) in KiB, of a node started on an empty data dir."""
    data = work / "empty"
    node = start_node(data, groups, work / "empty-node.log")
    try:
        client = NodeClient(node, groups=groups, timeout=60.0)
        m = measure_node(node, client, groups)
    finally:
        node.shutdown()
        shutil.rmtree(data, ignore_errors=True)
    return int(statistics.median(s["rss_kib"] for s in m["shards"].values())), int(m["node_rss_kib"])


def cold_start(data: Path, log_file: Path, spec: FleetSpec, expected: dict[int, int],
               empty_kib: int, run: int) -> tuple[Node, NodeClient, dict[str, Any]]:
    started = time.perf_counter()
    node = start_node(data, spec.groups, log_file)
    ready = time.perf_counter() - started
    try:
        client = NodeClient(node, groups=spec.groups, timeout=600.0)
        wait(lambda: _all_meters(client, expected), 600, "every group to answer with all its meters")
        took = time.perf_counter() - started
        m = measure_node(node, client, spec.groups)
    except BaseException:
        node.shutdown()
        raise
    shards = m["shards"]
    meters = sum(s["meters"] for s in shards.values())
    shard_kib = sum(s["rss_kib"] for s in shards.values())
    record = {
        "stage": "cold_start", "run": run, "meters": meters, "groups": spec.groups,
        "billed_fraction": spec.billed_fraction, "seconds": round(took, 2), "tree_ready_s": round(ready, 2),
        "recovery_s_max": max(s["recovery_s"] for s in shards.values()),
        "node_rss_mb": round(m["node_rss_kib"] / 1024, 1),
        "node_bytes_per_meter": round(m["node_rss_kib"] * 1024 / max(1, meters)),
        "shard_rss_mb": round(shard_kib / 1024, 1),
        "bytes_per_meter_raw": round(shard_kib * 1024 / max(1, meters)),
        "bytes_per_meter": round((shard_kib - empty_kib * len(shards)) * 1024 / max(1, meters)),
        "shard_peak_rss_mb": round(max(s["hwm_kib"] for s in shards.values()) / 1024, 1),
        "node_peak_rss_mb_upper": round(m["node_hwm_kib"] / 1024, 1),  # sum of each process's own peak
        "load_cpu_us_per_meter": round(sum(s["cpu_s"] for s in shards.values()) * 1e6 / max(1, meters), 2),
        "processes": m["processes"],
        "per_group": [{"group": g, **{k: v for k, v in s.items() if k != "pid"}} for g, s in shards.items()],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    return node, client, record


def recovery(node: Node, client: NodeClient, expected: dict[int, int], run: int) -> dict[str, Any]:
    """SIGKILL shard group 0; seconds until it runs again with all its meters."""
    victim = client.shard_status(0)
    killed_at = time.perf_counter()
    os.kill(victim.pid, signal.SIGKILL)  # a pid of the node this bench started

    def back() -> bool:
        try:
            child = node.status().child("shards/shard-0")
        except Exception:
            return False
        return child.pid not in (None, victim.pid) and str(child.state) == "running"

    wait(back, 600, "shard group 0 to come back")
    running = time.perf_counter() - killed_at
    client.refresh()
    wait(lambda: _all_meters(client, {0: expected[0]}), 600, "shard group 0 to answer with all its meters")
    took = time.perf_counter() - killed_at
    status = client.shard_status(0)
    return {
        "stage": "recovery", "run": run, "group": 0, "meters": status.meters,
        "seconds": round(took, 2), "running_s": round(running, 2),
        "recovery_s": round(status.recovery_seconds, 3),
        "rss_mb": round(proc_status(status.pid, "VmRSS") // 1024 / 1024, 1),
        "cpu_s": round(cpu_seconds(status.pid), 2),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _median(records: Iterable[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in records]
    return round(statistics.median(values), 3) if values else float("nan")


def _git_head() -> dict[str, object]:
    """The commit this bench runs from, and the files of the jodo packages that differ from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except OSError:
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "domain", "actors", "storage",
                                      "protocols", "jodo", "supervisors").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD"), "dirty": dirty}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=725_000)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="node starts (each: cold start, then recovery)")
    parser.add_argument("--billed-fraction", type=float, default=0.0,
                        help="meters that also carry a bill and a payment id")
    parser.add_argument("--via", choices=["clone", "register"], default="clone")
    parser.add_argument("--workers", type=int, default=None, help="generator processes (default: cores)")
    parser.add_argument("--quick", action="store_true", help="100 000 meters, 2 groups, 1 run")
    parser.add_argument("--dir", default=None, help="work dir (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--reuse", action="store_true",
                        help="with --dir: use the fleet already there if it has the same size and mix")
    parser.add_argument("--label", default="", help="free text for the start record (e.g. a commit)")
    parser.add_argument("--json", action="store_true", help="JSON lines (always)")
    args = parser.parse_args(argv)
    if args.quick:
        args.meters, args.groups, args.runs = 100_000, 2, 1
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="jodo-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    spec = FleetSpec(meters=args.meters, groups=args.groups, now=int(time.time()),
                     billed_fraction=args.billed_fraction, via=args.via)
    try:
        emit(stage="start", meters=spec.meters, groups=spec.groups, runs=args.runs, via=spec.via,
             billed_fraction=spec.billed_fraction, cpus=os.cpu_count(), dir=str(work),
             git=_git_head(), label=args.label, loadavg=[round(x, 2) for x in os.getloadavg()])
        empty_kib, empty_node_kib = empty_shard_rss(work, spec.groups)  # first: fails fast
        emit(stage="empty_shard", shard_rss_mb=round(empty_kib / 1024, 1),
             node_rss_mb=round(empty_node_kib / 1024, 1))
        manifest = work / "fleet.json"
        wanted = {"meters": spec.meters, "groups": spec.groups, "billed_fraction": spec.billed_fraction}
        previous = json.loads(manifest.read_text()) if manifest.exists() else {}
        if args.reuse and previous.get("spec") == wanted:
            expected = {int(g): int(n) for g, n in previous["expected"].items()}
            emit(stage="generate", reused=str(data), meters=sum(expected.values()))
        else:
            shutil.rmtree(data, ignore_errors=True)
            started, cpu = time.perf_counter(), time.process_time()
            stats = generate(data, spec, args.workers)
            took = time.perf_counter() - started
            expected = {int(s["group"]): int(s["meters"]) for s in stats}
            manifest.write_text(json.dumps({"spec": wanted, "expected": expected}))
            disk = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
            emit(stage="generate", meters=sum(expected.values()), seconds=round(took, 2),
                 meters_per_s=round(spec.meters / max(took, 1e-9)),
                 worker_cpu_us_per_meter=round(
                     sum(float(s["cpu_s"]) for s in stats) * 1e6 / max(1, spec.meters), 2),
                 parent_cpu_s=round(time.process_time() - cpu, 2), disk_mb=round(disk / 2**20, 1),
                 per_group=stats, note="setup, not a jodo figure")

        colds: list[dict[str, Any]] = []
        recoveries: list[dict[str, Any]] = []
        for run in range(1, args.runs + 1):
            node, client, record = cold_start(data, work / f"node-{run}.log", spec, expected, empty_kib, run)
            try:
                emit(**record)
                colds.append(record)
                rec = recovery(node, client, expected, run)
                emit(**rec)
                recoveries.append(rec)
            finally:
                report = node.shutdown()
                if report.killed or report.survivors:
                    emit(stage="shutdown", run=run, killed=list(report.killed),
                         survivors=list(report.survivors))
        emit(stage="summary", meters=spec.meters, groups=spec.groups, billed_fraction=spec.billed_fraction,
             runs=len(colds),
             cold_start_s=_median(colds, "seconds"), recovery_s_max=_median(colds, "recovery_s_max"),
             node_rss_mb=_median(colds, "node_rss_mb"), bytes_per_meter=_median(colds, "bytes_per_meter"),
             bytes_per_meter_raw=_median(colds, "bytes_per_meter_raw"),
             shard_peak_rss_mb=_median(colds, "shard_peak_rss_mb"),
             load_cpu_us_per_meter=_median(colds, "load_cpu_us_per_meter"),
             shard_recovery_s=_median(recoveries, "seconds"),
             shard_recovery_own_s=_median(recoveries, "recovery_s"),
             note="medians over runs; goals: <= 250 B/meter, 1 crore on one node, cold start < 30 s, "
                  "shard recovery < 3 s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    emit(stage="done")


if __name__ == "__main__":
    main()
