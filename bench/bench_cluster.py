"""The cluster, measured: `python -m bench.bench_cluster [--quick]`. Prints JSON lines, asserts nothing.

1. **One node, SQLite against PostgreSQL, in the same run**: `bench.bench_runtime` twice in fresh
   interpreters (same fleet, same payments), `--storage sqlite` then `--storage postgresql`
   (a throwaway server, fsync on): payments/s end to end, CPU per payment per process, the
   PostgreSQL server's own CPU included; the ratio PostgreSQL / SQLite.
2. **Failover**, `--failovers` times: three `jodo serve` nodes over one PostgreSQL
   (`jodo.localcluster`), signed webhooks offered at `--rate` per second spread over the live
   nodes, SIGKILL of every process of one node; seconds from the kill until every orphaned group
   serves again (polled at 20 ms on the survivors), and payment (200) → relay connected at the
   head-end for the payments answered from 2 s before the kill to 10 s after it (p50, p99, max).
   Every payment is checked once at the end: applied in the ledger, exactly one connect executed.
3. **Three nodes' CPU per payment**: CPU seconds of every process of the three nodes plus the
   PostgreSQL server over a steady stretch of webhooks, per payment: what capacity per node
   projects from (deploy/cluster/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, emit
from jodo.localcluster import DUES, PAYMENTS, Cluster, account, http, serial
from jodo.pglocal import LocalPostgres
from protocols.headend import HesControlState
from supervisors.processes import process_group_members


def _runtime(storage: str, meters: int, payments: int, runs: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_runtime", "--meters", str(meters), "--throughput-payments",
           str(payments), "--runs", str(runs), "--rate", "100", "--rate-seconds", "1", "--storage", storage,
           "--skip-recovery"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    through = next(r for r in records if r.get("stage") == "throughput")
    cpu = next(r for r in records if r.get("stage") == "throughput_cpu_us_per_payment")
    return {"payments_per_s": through["payments_per_s"], "runs": through["runs"], "cpu_us_per_payment": cpu}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class _Webhooks:
    """Signed webhooks at `rate`/s over the live nodes, one per meter, each retried until a 200."""

    def __init__(self, cluster: Cluster, meters: range, rate: float, prefix: str) -> None:
        self.cluster, self.meters, self.rate, self.prefix = cluster, meters, rate, prefix
        self.answered: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for k, i in enumerate(self.meters):
            delay = start + k / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while True:
                live = self.cluster.live()
                try:
                    status = self.cluster.pay(live[k % len(live)], f"{self.prefix}-{i}", i)
                except OSError:
                    status = 599
                if status == 200:
                    self.answered[i] = time.monotonic()
                    break
                time.sleep(0.02)


def _connected_times(cluster: Cluster, load: _Webhooks, timeout: float = 600) -> dict[int, float]:
    """When each paid meter's relay was first seen connected at the head-end, polled (every meter
    waiting in one call) while the load runs and until every paid meter is seen."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = load.thread.is_alive()
        waiting = [i for i in list(load.answered) if i not in seen]
        if not waiting and not running:
            break
        now = time.monotonic()
        for i in cluster.connected(waiting):
            seen[i] = now
        time.sleep(0.01)
    return seen


def _failover(work: Path, meters: int, rate: float, run: int) -> dict[str, Any]:
    with LocalPostgres(work / f"pg-{run}", fsync=True) as pg:
        cluster = Cluster(work / f"nodes-{run}", pg.create_database("bench"), meters=meters)
        try:
            cluster.start()
            cluster.register_meters()
            victim = cluster.nodes[1]
            orphans = sorted(victim.serving())
            load = _Webhooks(cluster, range(meters), rate, f"fo{run}")
            seen: dict[int, float] = {}
            poller = threading.Thread(target=lambda: seen.update(_connected_times(cluster, load)),
                                      daemon=True)
            load.thread.start()
            poller.start()
            time.sleep(meters / rate / 3)  # a third of the payments before the kill
            killed = time.monotonic()
            victim.kill()
            served = cluster.wait_served(timeout=120, without=[victim.node_id])
            poller.join(600)
            window = [seen[i] - t for i, t in load.answered.items()
                      if i in seen and killed - 2 <= t <= killed + 10]
            ledger = cluster.applied_ledger(len(load.answered))
            twice = sum(1 for n in cluster.executed().values() if n != 1)
            return {
                "stage": "failover", "run": run, "meters": meters, "offered_per_s": rate,
                "orphaned_groups": orphans, "failover_s": round(served - killed, 3),
                "lease_ttl_s": cluster.lease_ttl_s, "renew_every_s": cluster.renew_every_s,
                "window_payments": len(window),
                "window_to_connected_ms": {q: round(_pct(window, v) * 1000, 1) for q, v in
                                           (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
                "paid": len(load.answered), "connected": len(seen),
                "applied_in_ledger": sum(1 for _, s in ledger.values() if s == "applied"),
                "ledger_rows": len(ledger), "meters_switched_more_than_once": twice,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        finally:
            cluster.stop()


def _node_cpu(cluster: Cluster, pg: LocalPostgres) -> float:
    pids: set[int] = set()
    for node in cluster.live():
        for group in node.groups():
            pids.update(r.pid for r in process_group_members(group))
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    pids.add(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.add(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return sum(cpu_seconds(p) for p in pids)


def _three_nodes_cpu(work: Path, meters: int, rate: float) -> dict[str, Any]:
    with LocalPostgres(work / "pg-cpu", fsync=True) as pg:
        cluster = Cluster(work / "nodes-cpu", pg.create_database("bench"), meters=meters)
        try:
            cluster.start()
            cluster.register_meters()
            # what three idle nodes spend (ticks, heartbeats, the desks' ledger polls) over 10 s
            idle_from, idle_started = _node_cpu(cluster, pg), time.monotonic()
            time.sleep(10)
            idle_per_s = (_node_cpu(cluster, pg) - idle_from) / (time.monotonic() - idle_started)
            before, started = _node_cpu(cluster, pg), time.monotonic()
            load = _Webhooks(cluster, range(meters), rate, "cpu")
            load.thread.start()
            seen = _connected_times(cluster, load)
            took = time.monotonic() - started
            used = _node_cpu(cluster, pg) - before
            paid = max(1, len(seen))
            return {"stage": "three_nodes_cpu", "payments": len(load.answered), "connected": len(seen),
                    "offered_per_s": rate, "seconds": round(took, 2),
                    "idle_cpu_s_per_s_all_nodes_and_postgresql": round(idle_per_s, 3),
                    "cpu_us_per_payment_total": round(used * 1e6 / paid),
                    "cpu_us_per_payment_above_idle": round((used - idle_per_s * took) * 1e6 / paid),
                    "note": "webhooks through the front doors; the bench client's CPU is not counted",
                    "load_average": [round(x, 2) for x in os.getloadavg()]}
        finally:
            cluster.stop()


def _three_nodes_batch(work: Path, meters: int, batch: int) -> dict[str, Any]:
    """CPU per payment on the batch path (`POST /v1/payments`, BBPS-style), batches spread over the
    three nodes in turn: per-message costs amortised, as at a month-end storm."""
    with LocalPostgres(work / "pg-batch", fsync=True) as pg:
        cluster = Cluster(work / "nodes-batch", pg.create_database("bench"), meters=meters)
        try:
            cluster.start()
            cluster.register_meters()
            before, started = _node_cpu(cluster, pg), time.monotonic()
            now = int(time.time())
            for k, lo in enumerate(range(0, meters, batch)):
                body = json.dumps([{"payment_id": f"b-{i}", "account": account(i), "amount_paise": DUES,
                                    "channel": "counter", "paid_at": now, "gateway": "counter"}
                                   for i in range(lo, min(meters, lo + batch))]).encode()
                node = cluster.nodes[k % len(cluster.nodes)]
                while True:
                    status, _ = http(node.url, "POST", "/v1/payments", body,
                                          {"Content-Type": "application/json"}, token=PAYMENTS, timeout=60)
                    if status == 200:
                        break
                    time.sleep(0.1)
            submitted = time.monotonic() - started
            deadline = time.monotonic() + 600
            while True:
                states = cluster.sim.relay_states([serial(i) for i in range(meters)])
                if all(st.control_state == HesControlState.CONNECTED for st in states):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("batch payments to connect")
                time.sleep(0.05)
            took = time.monotonic() - started
            used = _node_cpu(cluster, pg) - before
            return {"stage": "three_nodes_batch", "payments": meters, "batch": batch,
                    "submit_seconds": round(submitted, 2), "seconds": round(took, 2),
                    "payments_per_s": round(meters / took),
                    "cpu_us_per_payment_all_nodes_and_postgresql": round(used * 1e6 / meters),
                    "load_average": [round(x, 2) for x in os.getloadavg()]}
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--failovers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="webhooks/s offered to the cluster")
    args = parser.parse_args()
    meters, payments, runs = (20_000, 5_000, 1) if args.quick else (200_000, 50_000, 3)
    emit(stage="start", quick=args.quick, cpus=os.cpu_count(),
         load_average=[round(x, 2) for x in os.getloadavg()])
    sqlite = _runtime("sqlite", meters, payments, runs)
    postgres = _runtime("postgresql", meters, payments, runs)
    emit(stage="one_node", meters=meters, payments=payments, runs=runs, sqlite=sqlite, postgresql=postgres,
         postgresql_over_sqlite=round(postgres["payments_per_s"] / sqlite["payments_per_s"], 2))
    work = Path(tempfile.mkdtemp(prefix="jodo-bench-cluster-"))
    work.chmod(0o755)  # the throwaway servers run as the postgres user, under it
    cluster_meters = 300 if args.quick else 1_200
    failovers = [_failover(work, cluster_meters, args.rate, run)
                 for run in range(1 if args.quick else args.failovers)]
    for record in failovers:
        emit(**record)
    times = sorted(r["failover_s"] for r in failovers)
    emit(stage="failover_summary", runs=len(times), failover_s=times, median_s=times[len(times) // 2])
    emit(**_three_nodes_cpu(work, cluster_meters, args.rate))
    emit(**_three_nodes_batch(work, 3_000 if args.quick else 30_000, 1_000))
    __import__("shutil").rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
