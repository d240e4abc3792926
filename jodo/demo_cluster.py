"""`jodo demo --cluster`: three nodes and a throwaway PostgreSQL on this machine; one node is killed
mid-demo and the payments for its meters reconnect anyway.

1. A PostgreSQL server in a temporary directory (Debian's initdb + pg_ctl, loopback, a password),
   a simulated head-end, and three `jodo serve` nodes on 127.0.0.11-13 sharing the database.
2. `--meters` meters, every one disconnected for unpaid dues, registered through node 1 (each
   registration is forwarded to the node serving the meter's group).
3. A third of the consumers pay (signed webhooks, spread over the nodes); their relays close.
4. SIGKILL of node 2's whole process group, as a power cut. The others take its shard groups when
   its leases expire; the failover time is measured (kill → every group served again).
5. The rest pay, node 2's meters among them, through the two survivors: every relay closes.
6. Checked against the ledger and the head-end: nothing lost, nothing credited twice, exactly one
   connect executed per paid meter. Everything started is stopped.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from jodo.localcluster import Cluster, account, eventually
from jodo.pglocal import LocalPostgres, LocalPostgresError

__all__ = ["run_cluster_demo"]


def _say(text: str) -> None:
    print(text, flush=True)


def _pay(cluster: Cluster, meters: range, prefix: str) -> tuple[dict[int, float], dict[int, float]]:
    """Pay every meter in `meters` through the live nodes in turn, watching the head-end between
    payments; returns (meter → when its payment was answered 200, meter → seconds to connected)."""
    paid: dict[int, float] = {}
    seen: dict[int, float] = {}
    for k, i in enumerate(meters):
        now = time.monotonic()
        for j in cluster.connected(j for j in paid if j not in seen):
            seen[j] = now - paid[j]
        deadline = time.monotonic() + 60
        while True:
            live = cluster.live()
            try:
                status = cluster.pay(live[k % len(live)], f"{prefix}-{i}", i)
            except OSError:
                status = 599
            if status == 200:
                paid[i] = time.monotonic()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"payment for {account(i)} not accepted within 60 s (last {status})")
            time.sleep(0.05)
    return paid, seen


def _reconnected(cluster: Cluster, payments: tuple[dict[int, float], dict[int, float]],
                 timeout: float = 90.0) -> list[float]:
    """Seconds from each payment's 200 to its relay connected at the head-end (polled)."""
    paid, seen = payments
    deadline = time.monotonic() + timeout
    while len(seen) < len(paid) and time.monotonic() < deadline:
        now = time.monotonic()
        for i in cluster.connected(i for i in paid if i not in seen):
            seen[i] = now - paid[i]
        time.sleep(0.01)
    missing = sorted(set(paid) - set(seen))
    if missing:
        raise RuntimeError(f"{len(missing)} paid meters still disconnected, e.g. {account(missing[0])}")
    return sorted(seen.values())


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_cluster_demo(meters: int = 300, keep: bool = False) -> int:
    if not 30 <= meters <= 100_000:
        print("jodo demo --cluster: --meters must be between 30 and 100 000", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="jodo-cluster-demo-"))
    try:
        with LocalPostgres(work / "postgres") as pg:
            dsn = pg.create_database("jodo")
            _say(f"PostgreSQL {pg.host}:{pg.port} (throwaway, password auth), data under {work}")
            cluster = Cluster(work / "nodes", dsn, meters=meters)
            try:
                started = time.monotonic()
                cluster.start()
                _say(f"3 nodes up in {time.monotonic() - started:.1f} s: " + ", ".join(
                    f"{n.node_id} {n.url} serves groups {sorted(n.serving())}" for n in cluster.nodes))
                cluster.register_meters()
                _say(f"{meters} meters registered through node1, all disconnected for unpaid dues")
                third = meters // 3
                first = _pay(cluster, range(third), "demo")
                took = _reconnected(cluster, first)
                _say(f"{third} consumers paid: every relay closed, payment → connected p50 "
                     f"{_pct(took, 0.5):.2f} s, max {took[-1]:.2f} s")
                victim = cluster.nodes[1]
                orphans = sorted(victim.serving())
                killed = time.monotonic()
                victim.kill()
                _say(f"SIGKILL of {victim.node_id}'s whole process group (it served groups {orphans})")
                cluster.wait_served(timeout=60, without=[victim.node_id])
                failover = time.monotonic() - killed
                _say(f"failover: every group served again {failover:.2f} s after the kill "
                     f"(lease TTL {cluster.lease_ttl_s} s): " + ", ".join(
                         f"{n.node_id} {sorted(n.serving())}" for n in cluster.live()))
                rest = _pay(cluster, range(third, meters), "demo")
                took = _reconnected(cluster, rest)
                _say(f"{len(rest[0])} more paid through the survivors (node2's meters among them): every "
                     f"relay closed, p50 {_pct(took, 0.5):.2f} s, max {took[-1]:.2f} s")
                ledger = cluster.applied_ledger(meters)
                applied = sum(1 for _, status in ledger.values() if status == "applied")
                twice = {m: n for m, n in cluster.executed().items() if n != 1}
                eventually(lambda: all(cluster.meter(i)["dues_paise"] == 0 for i in range(0, meters, 7)),
                           timeout=30, what="dues cleared")
                ok = applied == meters == len(ledger) and not twice
                _say(f"ledger: {len(ledger)} payments, {applied} applied; head-end: "
                     f"{sum(cluster.executed().values())} connects executed, "
                     f"{len(twice)} meters switched twice -> {'OK' if ok else 'FAILED'}")
                return 0 if ok else 1
            finally:
                cluster.stop()
    except LocalPostgresError as exc:
        print(f"jodo demo --cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
