"""End to end through the actors on multiprocTCPBase: `python -m bench.bench_runtime [--meters N]`.

Prints JSON lines, asserts nothing. One node (2 shard groups, 1 gateway, the desk) and the head-end
simulator (zero latency, every meter starting disconnected) on loopback. Measured:

- registration: meters/s through MeterCommandBatch (journaled), shard RSS per meter;
- throughput: payments/s from the first PaymentBatch to the last meter confirmed connected
  (payment in → ledger → credited → relay command → simulator → read back → connected);
- throughput again with ``--runs N`` (fresh meters each run; the median is the ``throughput`` record,
  each run a ``throughput_run`` record, connected/s over time a ``series`` record);
- latency at fixed offered loads (``--rates``, default 500 payments/s; each load on its own meters),
  open loop: payments arrive on schedule and leave every 20 ms in one batch whatever the desk's
  answers take (several in flight, as from the front door; how late they left: ``send_lag_ms``).
  p50/p95/p99/max of payment reaching the desk → connect command sent, and → connected confirmed
  (read back), plus the client's send → ledger answer; raw samples as ``series`` records for plots.
  The simulator's own latency is zero here (results leave right behind the accept) and is reported
  as such in each record;
- recovery: SIGKILL of one shard group process; seconds until it runs again, and its own
  snapshot + journal replay time.

``--prepaid`` (issue 16): every meter is then switched to prepaid with a balance of minus the dues plus
Rs 100 (registered disconnected, so off for a negative balance), and each payment is a recharge that
brings the balance to Rs 100: the same stages measure recharge → connect command (the fused path).
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from collections import deque
from pathlib import Path

from actors.facade import RuntimeConfig
from bench.common import cpu_seconds, emit, free_port, note_pids, rss_bytes, wait
from domain.commands import RegisterMeter, SetBillingMode
from domain.enums import BillingMode, RelayState
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo.client import NodeClient, Saturated
from jodo.node import Node, NodeSetup
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols.payments import PaymentReceived

HEAD_END = "hes-1"


def roles(node: Node) -> dict[str, int]:
    """Actor process pids by role (shard groups summed under one role)."""
    tree = node.status()
    out: dict[str, int] = {"bench+simulator": os.getpid()}
    for view in tree.supervisors():
        for child in view.status.children:
            if child.pid is not None and child.id != "gateways" and child.id != "shards":
                out[child.id] = child.pid
    return out


def account(i: int) -> str:
    return f"N{i:010d}"


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def connected(client: NodeClient) -> int:
    return sum(dict(client.shard_status(g).relay_counts).get("connected", 0) for g in client.shard)


def payments(start: int, count: int, dues: int) -> list[PaymentReceived]:
    now = int(time.time())
    return [
        PaymentReceived(payment_id=f"pay-{i}", account=account(i), amount_paise=dues, channel="upi",
                        gateway="razorpay", paid_at=now, received_at=now)
        for i in range(start, start + count)
    ]


def pay_all(client: NodeClient, batch: list[PaymentReceived]) -> None:
    while isinstance(client.pay(batch), Saturated):
        time.sleep(0.05)  # the desk said so: back off as a gateway would


def quantiles(samples: list[float], scale: float = 1000.0) -> dict[str, float]:
    return {q: round(pct(samples, v) * scale, 1) for q, v in
            (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}


def thin(samples: list[float], most: int) -> list[float]:
    """At most ``most`` of the samples, evenly spread over them (for plots)."""
    if len(samples) <= most:
        return list(samples)
    step = len(samples) / most
    return [samples[int(i * step)] for i in range(most)]


class ConnectedSeries:
    """Meters connected over time, sampled at most every ``every`` seconds while polled."""

    def __init__(self, client: NodeClient, every: float = 0.5) -> None:
        self.client = client
        self.every = every
        self.start = time.perf_counter()
        self.base = connected(client)
        self.t: list[float] = [0.0]
        self.count: list[int] = [self.base]

    def poll(self, force: bool = False) -> int:
        """Connected since the start (a status round trip); kept as a sample if one is due."""
        now = time.perf_counter() - self.start
        n = connected(self.client)
        if force or now - self.t[-1] >= self.every:
            self.t.append(now)
            self.count.append(n)
        return n - self.base

    def maybe_poll(self) -> None:
        if time.perf_counter() - self.start - self.t[-1] >= self.every:
            self.poll()

    def record(self, label: str) -> dict[str, object]:
        per_s = [round((c1 - c0) / (t1 - t0), 1) for t0, t1, c0, c1 in
                 zip(self.t, self.t[1:], self.count, self.count[1:], strict=False) if t1 > t0]
        return {"stage": "series", "kind": "throughput", "label": label,
                "t": [round(t, 2) for t in self.t[1:]], "per_s": per_s}


def throughput_run(client: NodeClient, lo: int, n: int, batch: int, dues: int,
                   label: str) -> tuple[dict[str, object], dict[str, object]]:
    """Pay meters [lo, lo + n) in batches of ``batch`` as fast as the desk takes them; wait until all
    are connected. Returns the run's record and its connected/s series."""
    series = ConnectedSeries(client)
    start = series.start
    for first in range(lo, lo + n, batch):
        pay_all(client, payments(first, min(batch, lo + n - first), dues))
        series.maybe_poll()
    submitted = time.perf_counter() - start
    deadline = time.perf_counter() + 600
    while series.poll() < n:
        if time.perf_counter() > deadline:
            raise TimeoutError("throughput run to connect")
        time.sleep(0.02)
    took = time.perf_counter() - start
    series.poll(force=True)
    _, to_connected = client.latency()
    record: dict[str, object] = {"payments": n, "batch": batch, "submit_seconds": round(submitted, 2),
              "seconds": round(took, 2), "payments_per_s": round(n / took),
              "p50_to_connected_s": round(pct(to_connected, 0.5), 3),
              "p99_to_connected_s": round(pct(to_connected, 0.99), 3)}
    return record, series.record(label)


def offer(client: NodeClient, lo: int, rate: float, seconds: float,
          dues: int) -> tuple[int, dict[str, object], list[float]]:
    """Open loop: payments "arrive" at ``rate`` per second for ``seconds``; every 20 ms (or as soon as
    the previous send returns, if later) everything arrived so far leaves in one batch, as the front
    door's micro-batching does, without waiting for answers. How late each payment left after its
    arrival is reported (``send_lag_ms``): the latency the desk-side samples do not see.

    Returns the payments sent, what was achieved, and each batch's send → answer milliseconds."""
    total = int(rate * seconds)
    cadence = 0.02
    outstanding: dict[str, tuple[float, list[PaymentReceived]]] = {}
    again: deque[tuple[float, list[PaymentReceived]]] = deque()  # saturated: (when, batch)
    answered_ms: list[float] = []
    lag_ms: list[float] = []
    saturated = 0
    sends = 0
    start = time.perf_counter()
    sent = 0
    last_send = start

    def take(timeout: float) -> None:
        nonlocal saturated
        for batch_id, answer in client.payment_answers(timeout):
            sent_at, batch = outstanding.pop(batch_id, (0.0, []))
            if isinstance(answer, Saturated):
                saturated += 1
                again.append((time.perf_counter() + 0.05, batch))
            elif sent_at:
                answered_ms.append((time.perf_counter() - sent_at) * 1000)

    def send(batch: list[PaymentReceived]) -> None:
        nonlocal sends
        outstanding[client.pay_nowait(batch)] = (time.perf_counter(), batch)
        sends += 1
        take(0.0)  # answers are read only while listening: keep the desk's replies moving

    give_up = start + seconds + 120  # a desk that answers "saturated" for ever must not hang the bench
    while sent < total or again:
        now = time.perf_counter()
        if now > give_up:
            raise TimeoutError(f"offered load: {sent} of {total} sent, {len(again)} batches still refused "
                               f"as saturated ({saturated} refusals) {now - start:.0f} s after the start")
        if again and again[0][0] <= now:
            send(again.popleft()[1])
            continue
        arrived = min(total, int((now - start) * rate) + 1)
        if arrived > sent and now >= last_send + cadence:
            n = min(arrived - sent, 5_000)
            batch = payments(lo + sent, n, dues)
            lag_ms += [(now - (start + (sent + i) / rate)) * 1000 for i in range(n)]
            send(batch)
            sent += n
            last_send = now
        else:
            nxt = max(last_send + cadence, start + sent / rate)
            take(max(0.0, min(nxt - now, again[0][0] - now if again else cadence)))
    deadline = time.perf_counter() + 120
    while outstanding or again:
        if time.perf_counter() > deadline:
            raise TimeoutError("desk answers")
        while again and again[0][0] <= time.perf_counter():
            send(again.popleft()[1])
        take(0.05)
    took = max(1e-9, last_send - start)
    achieved = round(sent / took, 1) if sent > 1 else 0.0
    return sent, {"payments": sent, "sends": sends, "achieved_per_s": achieved, "saturated": saturated,
                  "send_lag_ms": quantiles(lag_ms, scale=1.0)}, answered_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=725_000)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--throughput-payments", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1, help="throughput runs (fresh meters each); median")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=500.0, help="offered load for the latency run")
    parser.add_argument("--rates", default="", help="offered loads, comma-separated (e.g. 100,500,2000); "
                        "one latency stage each, on its own meters; default: --rate")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=5_000, help="raw latency samples per series record")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--desk-window", type=int, default=2, help="credit window per shard group")
    parser.add_argument("--tick", type=float, default=0.25, help="shard tick seconds")
    parser.add_argument("--storage", choices=["sqlite", "postgresql"], default="sqlite",
                        help="postgresql: a throwaway server (fsync on) holds the journals and the ledger; "
                             "its processes' CPU is counted as the role 'postgresql'")
    parser.add_argument("--skip-recovery", action="store_true", help="no SIGKILL stage at the end")
    parser.add_argument("--prepaid", action="store_true",
                        help="prepaid meters: each payment is a recharge that reconnects (issue 16)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()] or [args.rate]
    dues = 150_000
    work = Path(args.dir or tempfile.mkdtemp(prefix="jodo-bench-"))
    sim = SimulatorThread(SimConfig(meters=args.meters, disconnected_fraction=1.0, seed=1, max_batch=10_000))
    sim.start()
    sim_latency = "zero: the simulator answers in the same event-loop turn (results right behind the accept)"
    options = TreeOptions(
        data_dir=str(work / "data"), groups=args.groups, synchronous=args.synchronous,
        head_ends=(HeadEnd(name=HEAD_END, host=sim.host, port=sim.port),), desk_max_queued=400_000,
        desk_window=args.desk_window, tick_seconds=args.tick,
    )
    os.environ["JODO_DATA_DIR"] = options.data_dir
    pg = None
    if args.storage == "postgresql":
        from actors.stores import BACKEND_ENV, DSN_ENV
        from jodo.pglocal import LocalPostgres

        statements = bool(os.environ.get("JODO_BENCH_PG_STATEMENTS"))  # profile the server's side
        pg = LocalPostgres(tempfile.mkdtemp(prefix="jodo-bench-runtime-pg-"), fsync=True,
                           extra_settings={"shared_preload_libraries": "'pg_stat_statements'"}
                           if statements else None)
        pg.start()
        os.environ[BACKEND_ENV], os.environ[DSN_ENV] = "postgresql", pg.create_database("bench")
    node = Node(NodeSetup(runtime=RuntimeConfig(admin_port=free_port(), log_file=work / "node.log"),
                          root_flags=root_flags(), children=jodo_tree(options),
                          dead_letter_sink="actors.deadletters:stored_sink"))
    node.start()
    try:
        client = NodeClient(node, groups=args.groups, timeout=120.0)
        shard_pids = {g: client.shard_status(g).pid for g in client.shard}
        base_rss = sum(rss_bytes(p) for p in shard_pids.values())
        emit(stage="start", meters=args.meters, groups=args.groups, synchronous=args.synchronous,
             prepaid=args.prepaid,
             cpus=os.cpu_count(), dir=str(work), rates=rates, runs=args.runs, desk_window=args.desk_window,
             load_average=[round(x, 2) for x in os.getloadavg()], simulator_latency=sim_latency)

        # ---- registration
        start = time.perf_counter()
        chunk = 20_000
        for lo in range(0, args.meters, chunk):
            client.send(
                [
                    RegisterMeter(account=account(i), serial=f"MPW{i:08d}", head_end=HEAD_END,
                                  install_year=2022, relay_capable=True, control_mode=2,
                                  relay=RelayState.DISCONNECTED, opening_dues_paise=dues)
                    for i in range(lo, min(args.meters, lo + chunk))
                ],
                chunk=chunk,
            )
        if args.prepaid:  # a balance of Rs 100 less than the dues: the payment of the dues tops it up
            for lo in range(0, args.meters, chunk):
                client.send([SetBillingMode(account=account(i), mode=BillingMode.PREPAID,
                                            opening_balance_paise=10_000 - dues, request_id=f"bench-{i}")
                             for i in range(lo, min(args.meters, lo + chunk))], chunk=chunk)
        took = time.perf_counter() - start
        rss = sum(rss_bytes(p) for p in shard_pids.values())
        emit(stage="register", meters=args.meters, seconds=round(took, 2),
             meters_per_s=round(args.meters / took), shard_rss_mb=round(rss / 2**20, 1),
             bytes_per_meter=round((rss - base_rss) / max(1, args.meters)))

        # ---- throughput, --runs times on fresh meters
        for_latency = sum(int(r * args.rate_seconds) for r in rates)
        n = min(args.throughput_payments, (args.meters - for_latency) // max(1, args.runs))
        if n <= 0:
            raise SystemExit(f"--meters {args.meters} leaves no meters for the throughput runs")
        pids = roles(node)
        note_pids({str(p): r for r, p in pids.items()})
        cpu_before = {r: cpu_seconds(p) for r, p in pids.items()}
        pg_before = _postgres_cpu(pg)
        runs: list[dict[str, object]] = []
        next_meter = 0
        for run in range(args.runs):
            label = "batch path" if args.runs == 1 else f"batch path, run {run + 1}"
            record, series = throughput_run(client, next_meter, n, args.batch, dues, label)
            next_meter += n
            runs.append(record)
            emit(stage="throughput_run", run=run + 1, **record)
            emit(**series)
        paid = n * len(runs)
        cpu = {r: round((cpu_seconds(p) - cpu_before[r]) * 1e6 / paid) for r, p in pids.items()}
        if pg is not None:
            cpu["postgresql"] = round((_postgres_cpu(pg) - pg_before) * 1e6 / paid)
        emit(stage="throughput_cpu_us_per_payment", **cpu, total=sum(cpu.values()))
        median = sorted(runs, key=lambda r: int(str(r["payments_per_s"])))[len(runs) // 2]
        emit(stage="throughput", **median, runs=[r["payments_per_s"] for r in runs],
             note=f"median of {len(runs)} run(s)" if len(runs) > 1 else "one run")

        # ---- latency at fixed offered loads (open loop), each on its own meters
        client.latency()  # drop samples left from the throughput runs
        for rate in rates:
            before = connected(client)
            sent, offered, answered = offer(client, next_meter, rate, args.rate_seconds, dues)
            next_meter += int(rate * args.rate_seconds)
            target = before + sent
            wait(lambda target=target: connected(client) >= target, 120,  # type: ignore[misc]
                 "latency run to connect")
            to_command, to_connected = client.latency()
            emit(stage="latency", offered_per_s=rate, **offered,
                 to_command_ms=quantiles(to_command), to_connected_ms=quantiles(to_connected),
                 client_answer_ms=quantiles(answered, scale=1.0), samples=len(to_connected),
                 simulator_latency_ms=0.0, simulator_latency=sim_latency,
                 load_average=[round(x, 2) for x in os.getloadavg()],
                 measured_from="payment batch reaching the desk (before its ledger commit)")
            shown = f"{rate:g}/s"
            emit(stage="series", kind="latency", label=f"{shown} payment→command", offered_per_s=rate,
                 ms=[round(x * 1000, 2) for x in thin(to_command, args.samples)])
            emit(stage="series", kind="latency", label=f"{shown} payment→connected", offered_per_s=rate,
                 ms=[round(x * 1000, 2) for x in thin(to_connected, args.samples)])

        # ---- recovery of one shard group after SIGKILL
        if args.skip_recovery:
            emit(stage="done", note="recovery skipped")
            return
        client.refresh()
        victim = client.shard_status(0)
        killed_at = time.perf_counter()
        os.kill(victim.pid, signal.SIGKILL)

        def back() -> bool:
            try:
                child = node.status().child("shards/shard-0")
                return child.pid not in (None, victim.pid) and str(child.state) == "running"
            except Exception:
                return False

        wait(back, 300, "shard to come back")
        restart_s = time.perf_counter() - killed_at
        client.refresh()
        status = client.shard_status(0)
        emit(stage="recovery", meters=status.meters, restart_seconds=round(restart_s, 2),
             replay_seconds=round(status.recovery_seconds, 2))
        emit(stage="done", note="latency stages are one run each: run the command 3 times and take "
             "the medians; throughput is the median of --runs")
    finally:
        node.shutdown()
        sim.stop()
        if pg is not None:
            if os.environ.get("JODO_BENCH_PG_STATEMENTS"):
                import psycopg

                with psycopg.connect(pg.dsn("bench"), autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    for row in conn.execute(
                            "SELECT round(total_exec_time)::int, calls,"
                            " left(regexp_replace(query, '\\s+', ' ', 'g'), 150)"
                            " FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12"):
                        emit(stage="pg_statement", total_ms=row[0], calls=row[1], query=row[2])
            pg.stop()
            __import__("shutil").rmtree(pg.base_dir, ignore_errors=True)


def _postgres_cpu(pg: object) -> float:
    """CPU seconds of every process of the throwaway PostgreSQL server (postmaster and backends)."""
    if pg is None:
        return 0.0
    pid_file = Path(pg.data_dir) / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                total += cpu_seconds(int(entry.name))
    return total


if __name__ == "__main__":
    main()
