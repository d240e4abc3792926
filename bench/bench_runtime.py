"""End to end through the actors on multiprocTCPBase: `python -m bench.bench_runtime [--meters N]`.

Prints JSON lines, asserts nothing. One node (2 shard groups, 1 gateway, the desk) and the head-end
simulator (zero latency, every meter starting disconnected) on loopback. Measured:

- registration: meters/s through MeterCommandBatch (journaled), shard RSS per meter;
- throughput: payments/s from the first PaymentBatch to the last meter confirmed connected
  (payment in → ledger → credited → relay command → simulator → read back → connected);
- latency at a fixed offered load (default 500 payments/s): p50/p95/p99/max of payment received →
  connect command sent, and → connected confirmed (the simulator's latency is zero here);
- recovery: SIGKILL of one shard group process; seconds until it runs again, and its own
  snapshot + journal replay time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from actors.facade import RuntimeConfig
from domain.commands import RegisterMeter
from domain.enums import RelayState
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo.client import NodeClient, Saturated
from jodo.node import Node, NodeSetup
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols.payments import PaymentReceived

HEAD_END = "hes-1"


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(what)
        time.sleep(0.02)
    return time.perf_counter() - start


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=725_000)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--throughput-payments", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=500.0, help="offered load for the latency run")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--desk-window", type=int, default=8, help="credit window per shard group")
    parser.add_argument("--tick", type=float, default=0.25, help="shard tick seconds")
    args = parser.parse_args()
    dues = 150_000
    work = Path(args.dir or tempfile.mkdtemp(prefix="jodo-bench-"))
    sim = SimulatorThread(SimConfig(meters=args.meters, disconnected_fraction=1.0, seed=1, max_batch=10_000))
    sim.start()
    options = TreeOptions(
        data_dir=str(work / "data"), groups=args.groups, synchronous=args.synchronous,
        head_ends=(HeadEnd(name=HEAD_END, host=sim.host, port=sim.port),), desk_max_queued=400_000,
        desk_window=args.desk_window, tick_seconds=args.tick,
    )
    os.environ["JODO_DATA_DIR"] = options.data_dir
    node = Node(NodeSetup(runtime=RuntimeConfig(admin_port=free_port(), log_file=work / "node.log"),
                          root_flags=root_flags(), children=jodo_tree(options),
                          dead_letter_sink="actors.deadletters:stored_sink"))
    node.start()
    try:
        client = NodeClient(node, groups=args.groups, timeout=120.0)
        shard_pids = {g: client.shard_status(g).pid for g in client.shard}
        base_rss = sum(rss_bytes(p) for p in shard_pids.values())
        emit(stage="start", meters=args.meters, groups=args.groups, synchronous=args.synchronous,
             cpus=os.cpu_count(), dir=str(work))

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
        took = time.perf_counter() - start
        rss = sum(rss_bytes(p) for p in shard_pids.values())
        emit(stage="register", meters=args.meters, seconds=round(took, 2),
             meters_per_s=round(args.meters / took), shard_rss_mb=round(rss / 2**20, 1),
             bytes_per_meter=round((rss - base_rss) / max(1, args.meters)))

        # ---- throughput
        n = min(args.throughput_payments, args.meters - int(args.rate * args.rate_seconds))
        pids = roles(node)
        cpu_before = {r: cpu_seconds(p) for r, p in pids.items()}
        start = time.perf_counter()
        for lo in range(0, n, args.batch):
            pay_all(client, payments(lo, min(args.batch, n - lo), dues))
        submitted = time.perf_counter() - start
        wait(lambda: connected(client) >= n, 600, "throughput run to connect")
        took = time.perf_counter() - start
        to_command, to_connected = client.latency()
        cpu = {r: round((cpu_seconds(p) - cpu_before[r]) * 1e6 / n) for r, p in pids.items()}
        emit(stage="throughput_cpu_us_per_payment", **cpu, total=sum(cpu.values()))
        emit(stage="throughput", payments=n, batch=args.batch, submit_seconds=round(submitted, 2),
             seconds=round(took, 2), payments_per_s=round(n / took),
             p50_to_connected_s=round(pct(to_connected, 0.5), 3),
             p99_to_connected_s=round(pct(to_connected, 0.99), 3))

        # ---- latency at a fixed offered load
        lo = n
        total = int(args.rate * args.rate_seconds)
        per_tick = max(1, int(args.rate / 50))  # 50 sends per second
        start = time.perf_counter()
        sent = 0
        while sent < total and lo + sent < args.meters:
            due = start + sent / args.rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            batch = payments(lo + sent, min(per_tick, total - sent), dues)
            pay_all(client, batch)
            sent += len(batch)
        wait(lambda: connected(client) >= n + sent, 120, "latency run to connect")
        to_command, to_connected = client.latency()
        emit(stage="latency", offered_per_s=args.rate, payments=sent,
             to_command_ms={q: round(pct(to_command, v) * 1000, 1) for q, v in
                            (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
             to_connected_ms={q: round(pct(to_connected, v) * 1000, 1) for q, v in
                              (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
             samples=len(to_connected))

        # ---- recovery of one shard group after SIGKILL
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
        emit(stage="done", note="one run per stage: run the command 3 times and take the medians")
    finally:
        node.shutdown()
        sim.stop()


if __name__ == "__main__":
    main()
