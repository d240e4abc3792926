"""Month-end storm through the whole node: `python -m bench.bench_storm [--meters N] [--payments P]
[--rate-limit R] [--quick]`.

Prints JSON lines (each a dict with a "stage" key), asserts nothing. Two scenarios, each in a fresh
interpreter (the node's processes are forked from it) with a fresh node (2 shard groups, 1 gateway,
the desk on multiprocTCPBase) and data dir, against the head-end simulator in a thread of that
interpreter (zero latency, every meter starting disconnected):

1. ``burst``: N meters disconnected with dues; P payments submitted as fast as the desk takes them, in
   batches as a payment aggregator sends them, ``--in-flight`` batches unanswered at a time (a
   DeskSaturated reply is honoured by backing off and sending the same batch again); the simulator
   has no rate limit.
2. ``rate-limited``: the same, but the simulator rejects switching commands above R per second
   (token bucket of ``--rate-burst`` seconds; the gateway's adapter paces itself to the limit it
   announces); the floor for the drain is P / R.

Measured per scenario: submit seconds; drain seconds (first batch sent → every paid meter confirmed
connected in its shard); payments/s; payment → command sent and → connected p50/p99/max; peak RSS
(every 0.2 s) and PSS (every 1 s) of every node process and of their sum, sampled from /proc by a
thread; CPU per payment per process; the queueing at peak (relay commands waiting in the shards for a
gateway window, commands pending / in flight / unsent in the gateway's adapter, payments queued at the
desk); the simulator's rejections, frames and commands run per second while the gateway had a backlog;
and "nothing lost": the ledger's counts, the shards' connected count, dues and relay of the paid meters
read back from their shards (a sample, or all with ``--verify-all``), every meter's true relay at the
simulator (paid connected, unpaid not), and exactly one connect executed per paid meter.

Series for plots: ``{"stage": "series", "kind": "throughput" | "memory" | "headend", "label": ...,
"t": [...], ...}`` (meters connected per second, RSS sum, the simulator's commands run per second and
the gateway's pending/unsent commands), sampled every ~0.5 s (the RSS every 0.2 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from thespian.actors import PoisonMessage

from actors.facade import Address, RuntimeConfig, new_request_id
from bench.common import cpu_seconds, emit, free_port, proc_status, pss_bytes
from domain.commands import RegisterMeter
from domain.enums import RelayState
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from jodo.client import NodeClient
from jodo.node import Node, NodeSetup
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols import codec
from protocols.headend import HesControlState
from protocols.payments import (
    DeskSaturated,
    PaymentBatch,
    PaymentBatchResult,
    PaymentItemResult,
    PaymentReceived,
    PaymentResultCode,
)
from protocols.runtime import (
    DeskStatus,
    DeskStatusQuery,
    GatewayStatus,
    GatewayStatusQuery,
    ShardStatus,
    ShardStatusQuery,
)

R = TypeVar("R")
HEAD_END = "hes-1"
DUES = 150_000
PROBE_EVERY = 0.5  # seconds between samples of the connected count (throughput series)
RSS_EVERY = 0.2  # seconds between /proc samples (memory)


def group_members(pgid: int) -> set[int]:
    """Every live process in process group ``pgid``: the node's (the Thespian admin daemonizes into a
    group of its own, with the logger, the supervisors and the actors)."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                out.add(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def roles(node: Node) -> dict[str, int]:
    """Actor process pids by role: desk, shard-<g>, gateway-<head-end>."""
    out: dict[str, int] = {}
    for view in node.status().supervisors():
        for child in view.status.children:
            if child.pid is not None and child.id not in ("gateways", "shards"):
                out[child.id] = child.pid
    return out


def git_state() -> dict[str, object]:
    """The commit measured, and files changed in the work tree (other sessions edit it as we run)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"git_head": git("rev-parse", "--short", "HEAD").strip(), "git_dirty": ", ".join(dirty)}


def account(i: int) -> str:
    return f"N{i:010d}"


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def pct(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mb(n: float) -> float:
    return round(n / 2**20, 1)


class MemorySampler(threading.Thread):
    """Samples VmRSS of every node process every `RSS_EVERY` s, and PSS every `PSS_EVERY` samples:
    peak per role and of the sum. RSS counts pages a forked process still shares with its parent
    (each actor process is forked, and starts as a copy); PSS splits those, so its sum is the memory
    the node really holds.

    Reads /proc only (no actor messages: the NodeClient belongs to the main thread)."""

    PSS_EVERY = 5

    def __init__(self, named: dict[str, int], pgid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.named = named
        self.pgid = pgid
        self.by_pid = {pid: name for name, pid in named.items()}
        self.stop_event = threading.Event()
        self.t0 = time.perf_counter()
        self.t: list[float] = []
        self.total_mb: list[float] = []
        self.peak: Counter[str] = Counter()
        self.peak_sum = 0
        self.peak_pss: Counter[str] = Counter()
        self.peak_pss_sum = 0
        self.others: set[int] = set()

    def _measure(self, read: Callable[[int], int]) -> Counter[str]:
        per_role: Counter[str] = Counter()
        for pid, name in self.by_pid.items():
            per_role[name] += read(pid)
        per_role["other node processes"] = sum(read(p) for p in self.others)
        return per_role

    def run(self) -> None:
        refreshed = 0.0
        n = 0
        while not self.stop_event.is_set():
            now = time.perf_counter()
            if now - refreshed > 2.0:  # a restarted actor is a new pid: look again now and then
                self.others = group_members(self.pgid) - set(self.by_pid) - {os.getpid()}
                refreshed = now
            per_role = self._measure(lambda pid: proc_status(pid, "VmRSS"))
            total = sum(per_role.values())
            for name, value in per_role.items():
                self.peak[name] = max(self.peak[name], value)
            self.peak_sum = max(self.peak_sum, total)
            self.t.append(round(now - self.t0, 2))
            self.total_mb.append(mb(total))
            if n % self.PSS_EVERY == 0:
                pss = self._measure(pss_bytes)
                for name, value in pss.items():
                    self.peak_pss[name] = max(self.peak_pss[name], value)
                self.peak_pss_sum = max(self.peak_pss_sum, sum(pss.values()))
            n += 1
            self.stop_event.wait(RSS_EVERY)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


class Endpoint:
    """The client's Thespian endpoint with several payment batches in flight at once.

    `NodeClient.pay` waits for each batch's answer, and `ActorRuntime.ask` drops any reply that is not
    the one it waits for, which would lose the desk's answers to batches still in flight. Here every
    desk answer that arrives (during a status ask too) is kept by batch id until `take_answers`.
    """

    def __init__(self, client: NodeClient) -> None:
        self.client = client
        self.system: Any = client.runtime._system  # the facade has no listen(); the endpoint is ours
        self.answers: dict[str, PaymentBatchResult | DeskSaturated | PoisonMessage] = {}
        self.dropped = 0

    def send_payments(self, batch: list[PaymentReceived]) -> str:
        assert self.client.desk is not None
        msg = PaymentBatch(batch_id=uuid.uuid4().hex, payload=codec.encode_many(batch))
        self.system.tell(self.client.desk, msg)
        return msg.batch_id

    def _keep(self, reply: Any) -> bool:
        if isinstance(reply, PaymentBatchResult | DeskSaturated):
            self.answers[reply.batch_id] = reply
            return True
        if isinstance(reply, PoisonMessage) and isinstance(reply.poisonMessage, PaymentBatch):
            self.answers[reply.poisonMessage.batch_id] = reply  # the desk failed on it: sent again
            return True
        return False

    def ask(self, target: Address, msg: Any, expect: type[R], timeout: float = 120.0) -> R:
        self.system.tell(target, msg)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            reply = self.system.listen(remaining)
            if reply is None or self._keep(reply):
                continue
            if getattr(reply, "request_id", None) == msg.request_id and isinstance(reply, expect):
                return reply
            self.dropped += 1  # a late reply to an earlier ask
        raise TimeoutError(f"no {expect.__name__} within {timeout} s")

    def wait_answers(self, timeout: float) -> None:
        """Collect what arrives within ``timeout`` s (returns at the first message)."""
        reply = self.system.listen(timeout)
        while reply is not None:
            if not self._keep(reply):
                self.dropped += 1
            reply = self.system.listen(0.0)

    def take_answers(self) -> dict[str, PaymentBatchResult | DeskSaturated | PoisonMessage]:
        out, self.answers = self.answers, {}
        return out


@dataclass
class Probe:
    """Samples taken from the main thread (the client's thread) every `PROBE_EVERY` s."""

    client: NodeClient
    endpoint: Endpoint
    sim: SimulatorThread
    t0: float
    t: list[float] = field(default_factory=list)
    connected: list[int] = field(default_factory=list)
    executed: list[int] = field(default_factory=list)  # switching commands run at the simulator
    gateway_pending: list[int] = field(default_factory=list)  # in the adapter, sent or not
    gateway_unsent: list[int] = field(default_factory=list)  # pending, not yet on the wire
    peaks: Counter[str] = field(default_factory=Counter)
    last_at: float = -1.0
    errors: int = 0

    def due(self) -> bool:
        return time.perf_counter() - self.last_at >= PROBE_EVERY

    def sample(self) -> int:
        """Take one sample; return the connected count of the shards."""
        self.last_at = time.perf_counter()
        c, ask = self.client, self.endpoint.ask
        n = queued = pending = 0
        for g in sorted(c.shard):
            s = ask(c.shard[g], ShardStatusQuery(request_id=new_request_id()), ShardStatus)
            n += dict(s.relay_counts).get("connected", 0)
            queued += s.queued_commands
            pending += s.pending_commands
        gw = ask(c.gateway[HEAD_END], GatewayStatusQuery(request_id=new_request_id()), GatewayStatus)
        assert c.desk is not None
        desk = ask(c.desk, DeskStatusQuery(request_id=new_request_id()), DeskStatus)
        self.t.append(round(time.perf_counter() - self.t0, 2))
        self.connected.append(n)
        self.executed.append(self.sim.stats().executed)
        self.gateway_pending.append(gw.pending)
        self.gateway_unsent.append(max(0, gw.pending - gw.in_flight))
        for key, value in (("shard_queued_commands", queued), ("shard_pending_commands", pending),
                           ("gateway_pending", gw.pending), ("gateway_in_flight", gw.in_flight),
                           ("gateway_unsent", max(0, gw.pending - gw.in_flight)),
                           ("desk_queued", desk.queued)):
            self.peaks[key] = max(self.peaks[key], value)
        return n

    def backlogged_rate(self, backlog: int) -> tuple[float, float] | None:
        """Switching commands/s the simulator ran over the intervals that began with at least
        ``backlog`` commands waiting unsent in the gateway's adapter (it could have kept the head-end
        busy), and those intervals' total seconds; None if there were none. Reads count as in flight,
        so this is approximate; under a rate limit it shows whether the adapter used the quota."""
        ran = seconds = 0.0
        for i in range(1, len(self.t)):
            if self.gateway_unsent[i - 1] >= backlog:
                ran += self.executed[i] - self.executed[i - 1]
                seconds += self.t[i] - self.t[i - 1]
        return (ran / seconds, seconds) if seconds > 0 else None

    def per_second(self, counts: list[int]) -> tuple[list[float], list[float]]:
        t: list[float] = []
        rate: list[float] = []
        prev_t, prev_n = 0.0, counts[0] if counts else 0
        for at, n in zip(self.t, counts, strict=True):
            if at <= prev_t:
                continue
            t.append(at)
            rate.append(round((n - prev_n) / (at - prev_t), 1))
            prev_t, prev_n = at, n
        return t, rate


def payments(lo: int, hi: int, tag: str) -> list[PaymentReceived]:
    now = int(time.time())
    return [
        PaymentReceived(payment_id=f"{tag}-{i}", account=account(i), amount_paise=DUES, channel="upi",
                        gateway="razorpay", paid_at=now, received_at=now)
        for i in range(lo, hi)
    ]


@dataclass(frozen=True)
class Scenario:
    name: str  # burst | rate-limited
    label: str  # for the plots
    rate_limit: float  # 0 = none


def run(scenario: Scenario, args: argparse.Namespace) -> None:
    n_meters, n_paid = args.meters, min(args.payments, args.meters)
    work = Path(tempfile.mkdtemp(prefix=f"jodo-storm-{scenario.name}-", dir=args.dir))
    sim = SimulatorThread(SimConfig(
        meters=n_meters, disconnected_fraction=1.0, seed=1, max_batch=10_000,
        rate_limit=scenario.rate_limit, rate_burst=args.rate_burst,
    ))
    sim.start()
    options = TreeOptions(
        data_dir=str(work / "data"), groups=args.groups, synchronous=args.synchronous,
        head_ends=(HeadEnd(name=HEAD_END, host=sim.host, port=sim.port),),
        desk_max_queued=args.desk_max_queued,
        policy_text=Path(args.policy_file).read_text() if args.policy_file else "",
    )
    os.environ["JODO_DATA_DIR"] = options.data_dir
    node = Node(NodeSetup(runtime=RuntimeConfig(admin_port=free_port(), log_file=work / "node.log"),
                          root_flags=root_flags(), children=jodo_tree(options),
                          dead_letter_sink="actors.deadletters:stored_sink"))
    common = {"scenario": scenario.name, "label": scenario.label}
    sampler: MemorySampler | None = None
    try:
        node.start()
        client = NodeClient(node, groups=args.groups, timeout=120.0)
        emit(stage="start", **common, meters=n_meters, payments=n_paid, batch=args.batch,
             rate_limit=scenario.rate_limit, rate_burst=args.rate_burst if scenario.rate_limit else None,
             groups=args.groups, synchronous=args.synchronous, desk_max_queued=args.desk_max_queued,
             in_flight=args.in_flight, cpus=os.cpu_count(), loadavg=[round(x, 2) for x in os.getloadavg()],
             dir=str(work), **git_state())

        # ---- the fleet: every meter disconnected, with dues
        start = time.perf_counter()
        chunk = 20_000
        for lo in range(0, n_meters, chunk):
            client.send(
                [RegisterMeter(account=account(i), serial=serial(i), head_end=HEAD_END, install_year=2022,
                               relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                               opening_dues_paise=DUES)
                 for i in range(lo, min(n_meters, lo + chunk))],
                chunk=chunk,
            )
        took = time.perf_counter() - start
        emit(stage="register", **common, meters=n_meters, seconds=round(took, 2),
             meters_per_s=round(n_meters / took))

        # ---- the storm
        pids = roles(node)
        pgid = os.getpgid(pids["desk"])
        emit(stage="processes", **common, pids=pids, node_pgid=pgid)
        cpu_before = {r: cpu_seconds(p) for r, p in pids.items()}
        cpu_before_self = time.process_time()
        others_before = group_members(pgid) - set(pids.values()) - {os.getpid()}
        cpu_before_others = sum(cpu_seconds(p) for p in others_before)
        sampler = MemorySampler(pids, pgid)
        start = time.perf_counter()
        sampler.t0 = start
        sampler.start()
        endpoint = Endpoint(client)
        probe = Probe(client, endpoint, sim, start)
        probe.sample()
        codes: Counter[str] = Counter()
        saturated = poisoned = 0
        backoff_s = 0.0
        paid = bytearray(n_meters)  # 1: the desk accepted this meter's payment
        todo: deque[tuple[int, int, float]] = deque(  # (first, end, refused since), in offer order
            (lo, min(n_paid, lo + args.batch), 0.0) for lo in range(0, n_paid, args.batch))
        later: list[tuple[float, int, int, float, float]] = []  # (resend at, first, end, since, delay)
        in_flight: dict[str, tuple[int, int, float, float]] = {}  # batch id → (first, end, since, delay)
        delays: dict[int, float] = {}
        abandoned: list[tuple[int, int]] = []
        while todo or later or in_flight:
            now = time.perf_counter()
            while later and later[0][0] <= now:  # backed off long enough: first in line again
                _, lo, hi, since, _ = heapq.heappop(later)
                todo.appendleft((lo, hi, since))
            while todo and len(in_flight) < args.in_flight:
                lo, hi, since = todo.popleft()
                batch_id = endpoint.send_payments(payments(lo, hi, "storm"))
                in_flight[batch_id] = (lo, hi, since, delays.get(lo, 0.05))
            endpoint.wait_answers(0.05 if in_flight else 0.0)
            for batch_id, answer in endpoint.take_answers().items():
                if batch_id not in in_flight:
                    continue
                lo, hi, since, delay = in_flight.pop(batch_id)
                if isinstance(answer, PaymentBatchResult):
                    for r in codec.decode_many(answer.payload, expect=PaymentItemResult):
                        codes[str(r.code)] += 1
                        if r.code is PaymentResultCode.ACCEPTED:
                            paid[lo + r.index] = 1
                    continue
                now = time.perf_counter()
                since = since or now
                if isinstance(answer, PoisonMessage):
                    poisoned += 1
                    pause = 0.05
                else:  # the desk said so: back off as an aggregator would, then send it again
                    saturated += 1
                    pause = min(delay, max(0.05, float(answer.retry_after_s)))
                if now - since > args.give_up:
                    abandoned.append((lo, hi))  # refused for too long: reported, not sent again
                    continue
                backoff_s += pause
                delays[lo] = delay * 2
                heapq.heappush(later, (now + pause, lo, hi, since, delay * 2))
            if probe.due():
                probe.sample()
            if not in_flight and not todo and later:
                time.sleep(max(0.0, min(0.05, later[0][0] - time.perf_counter())))
        n_paid = sum(paid)
        if abandoned:
            d = client.desk_status()
            emit(stage="abandoned", **common, batches=len(abandoned),
                 abandoned_payments=sum(hi - lo for lo, hi in abandoned), first=abandoned[:5],
                 desk_queued=d.queued, desk_saturated=d.saturated,
                 desk_in_flight_batches=dict(d.in_flight_batches), ledger=dict(d.counts))
        submitted = time.perf_counter() - start
        floor = n_paid / scenario.rate_limit if scenario.rate_limit else None
        deadline = time.perf_counter() + args.drain_timeout + (floor or 0.0) * 3
        drained = False
        now_connected = probe.connected[-1]
        while time.perf_counter() < deadline:
            if probe.due():
                now_connected = probe.sample()
                if now_connected >= n_paid:
                    drained = True
                    break
            time.sleep(0.02)
        drain = time.perf_counter() - start
        sampler.stop()
        per = 1e6 / max(1, n_paid)
        cpu = {r: round((cpu_seconds(p) - cpu_before[r]) * per) for r, p in pids.items()}
        cpu["bench+simulator"] = round((time.process_time() - cpu_before_self) * per)
        cpu["other node processes"] = round(
            (sum(cpu_seconds(p) for p in others_before) - cpu_before_others) * per)
        to_command, to_connected = client.latency()
        emit(stage="storm", **common, payments=n_paid, abandoned_payments=args.payments - n_paid,
             batch=args.batch, in_flight=args.in_flight, drained=drained,
             connected=now_connected, submit_seconds=round(submitted, 2), drain_seconds=round(drain, 2),
             payments_per_s=round(n_paid / drain), floor_seconds=None if floor is None else round(floor, 2),
             drain_over_floor=None if floor is None else round(drain / floor, 3),
             saturated_replies=saturated, poisoned_batches=poisoned, dropped_replies=endpoint.dropped,
             backoff_seconds=round(backoff_s, 2), desk_results=dict(codes),
             to_connected_s={q: None if (v := pct(to_connected, p)) is None else round(v, 3)
                             for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
             to_command_s={q: None if (v := pct(to_command, p)) is None else round(v, 3)
                           for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
             latency_samples=len(to_connected))
        emit(stage="cpu_us_per_payment", **common, **cpu, total=sum(cpu.values()))
        hwm = {r: mb(proc_status(p, "VmHWM")) for r, p in pids.items()}
        emit(stage="memory", **common, peak_rss_mb={k: mb(v) for k, v in sorted(sampler.peak.items())},
             peak_sum_mb=mb(sampler.peak_sum),
             peak_pss_mb={k: mb(v) for k, v in sorted(sampler.peak_pss.items())},
             peak_pss_sum_mb=mb(sampler.peak_pss_sum), vm_hwm_mb=hwm, samples=len(sampler.t),
             note="peak_sum: highest sampled sum of VmRSS over every node process (not the sum of "
                  "per-process peaks; RSS counts pages shared with the forking parent in each process); "
                  "pss: the same with shared pages split, sampled every 1 s; vm_hwm: each process's own "
                  "RSS high-water mark since it started")
        gw = client.gateway_status(HEAD_END)
        stats = sim.stats()
        backlog = probe.backlogged_rate(args.backlog)
        emit(stage="queueing", **common, peaks=dict(probe.peaks),
             executed_per_s_while_backlogged=None if backlog is None else round(backlog[0]),
             backlogged_seconds=None if backlog is None else round(backlog[1], 1),
             gateway_outcomes=dict(gw.outcomes),
             gateway_breaker=gw.breaker, sim_accepted=stats.accepted, sim_rejected=dict(stats.rejected),
             sim_deduplicated=stats.deduplicated, sim_expired=stats.expired, sim_failed=stats.failed,
             sim_frames_in=stats.frames_in,
             sim_commands_per_frame=round(stats.accepted / max(1, stats.frames_in), 1),
             probe_samples=len(probe.t))

        # ---- nothing lost
        verify_start = time.perf_counter()
        desk = client.desk_status()
        ledger_deadline = time.perf_counter() + 30
        while dict(desk.counts).get("applied", 0) < n_paid and time.perf_counter() < ledger_deadline:
            time.sleep(0.1)
            desk = client.desk_status()
        ledger = dict(desk.counts)
        ledger_s = time.perf_counter() - verify_start
        shard = [client.shard_status(g) for g in sorted(client.shard)]
        relay_counts: Counter[str] = Counter()
        for s in shard:
            relay_counts.update(dict(s.relay_counts))
        paid_idx = [i for i in range(n_meters) if paid[i]]
        checked = paid_idx if args.verify_all else sorted(
            random.Random(7).sample(paid_idx, min(n_paid, args.verify_sample)))
        meters_start = time.perf_counter()
        dues_nonzero: list[str] = []
        not_connected: list[str] = []
        for i in checked:
            m = client.meter(account(i))
            if m is None or m.dues_paise != 0:
                dues_nonzero.append(account(i))
            if m is None or m.relay is not RelayState.CONNECTED:
                not_connected.append(account(i))
        meters_s = time.perf_counter() - meters_start
        sim_start = time.perf_counter()
        sim_paid_off: list[str] = []
        sim_unpaid_on: list[str] = []
        step = 20_000
        for lo in range(0, n_meters, step):
            serials = [serial(i) for i in range(lo, min(n_meters, lo + step))]
            for i, st in enumerate(sim.relay_states(serials), start=lo):
                on = st.control_state == HesControlState.CONNECTED
                if paid[i] and not on:
                    sim_paid_off.append(st.meter)
                elif not paid[i] and on:
                    sim_unpaid_on.append(st.meter)
        stats = sim.stats()
        # switching commands the simulator ran, per meter (it remembers each by command id)
        runs: Counter[str] = sim.call(lambda h: Counter(r.meter for r in h.core._ran.values()))
        twice = sorted(m for m, k in runs.items() if k > 1)
        exactly_once = (stats.executed == n_paid and not twice and not sim_paid_off and not sim_unpaid_on
                        and len(runs) == n_paid)
        if twice:
            example = account(int(twice[0].removeprefix("MPW")))
            ran = sim.call(lambda h: [(r.command_id, round(r.at, 3)) for r in h.core._ran.values()
                                      if r.meter == twice[0]])
            emit(stage="executed_twice", **common, meters=len(twice), examples=twice[:5],
                 simulator_ran=ran, history_of=example,
                 history=[{k: str(v) for k, v in dataclasses.asdict(e).items()}
                          for e in client.history(example, limit=30)])
        nothing_lost = (
            ledger.get("applied", 0) == n_paid and not ledger.get("pending") and not ledger.get("suspense")
            and relay_counts.get("connected", 0) == n_paid and not dues_nonzero and not not_connected
            and exactly_once
        )
        emit(stage="lost", **common, nothing_lost=nothing_lost, ledger=ledger,
             shard_relay_counts=dict(relay_counts),
             paid_but_disconnected=sum(s.paid_but_disconnected for s in shard),
             pending_commands=sum(s.pending_commands for s in shard),
             queued_commands=sum(s.queued_commands for s in shard),
             meters_checked=len(checked), dues_nonzero=len(dues_nonzero),
             shard_not_connected=len(not_connected),
             examples=(dues_nonzero + not_connected)[:5],
             sim_paid_not_connected=len(sim_paid_off), sim_unpaid_connected=len(sim_unpaid_on),
             sim_examples=(sim_paid_off + sim_unpaid_on)[:5], sim_executed=stats.executed,
             sim_meters_executed_twice=len(twice),
             exactly_once=exactly_once,
             verify_seconds={"ledger": round(ledger_s, 2), "meters": round(meters_s, 2),
                             "simulator": round(time.perf_counter() - sim_start, 2)})
        t, per_s = probe.per_second(probe.connected)
        emit(stage="series", kind="throughput", **common, t=t, per_s=per_s)
        t, executed_per_s = probe.per_second(probe.executed)
        emit(stage="series", kind="headend", **common, t=t, executed_per_s=executed_per_s,
             gateway_pending=probe.gateway_pending, gateway_unsent=probe.gateway_unsent,
             rate_limit=scenario.rate_limit)
        emit(stage="series", kind="memory", **common, t=sampler.t, rss_mb=sampler.total_mb)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        node.shutdown()
        sim.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)  # ~200 MB for 150 000 meters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=150_000, help="fleet size (all disconnected, dues)")
    parser.add_argument("--payments", type=int, default=100_000, help="payments in the storm")
    parser.add_argument("--rate-limit", type=float, default=2_000.0,
                        help="head-end switching commands/s in the rate-limited scenario")
    parser.add_argument("--rate-burst", type=float, default=1.0,
                        help="seconds of rate the simulator's token bucket holds")
    parser.add_argument("--batch", type=int, default=1_000, help="payments per PaymentBatch")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--desk-max-queued", type=int, default=200_000,
                        help="payments waiting at the desk before it answers DeskSaturated")
    parser.add_argument("--scenario", choices=["both", "burst", "rate-limited"], default="both")
    parser.add_argument("--verify-sample", type=int, default=1_000,
                        help="paid meters whose dues and relay are read back from their shard")
    parser.add_argument("--verify-all", action="store_true", help="read back every paid meter")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait for the drain (plus 3x the floor when rate-limited)")
    parser.add_argument("--in-flight", type=int, default=4,
                        help="payment batches sent and not yet answered (an aggregator's concurrency)")
    parser.add_argument("--backlog", type=int, default=500,
                        help="commands waiting unsent in the gateway that count as a backlog "
                        "(for executed_per_s_while_backlogged)")
    parser.add_argument("--give-up", type=float, default=120.0,
                        help="seconds of DeskSaturated replies to one batch before the storm stops there")
    parser.add_argument("--policy-file", default=None, help="a policy TOML override for the shards")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (and node logs)")
    parser.add_argument("--dir", default=None, help="parent of the data dirs (default: the temp dir)")
    parser.add_argument("--no-done", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true",
                        help="20 000 meters, 10 000 payments, rate limit 5 000/s")
    args = parser.parse_args(argv)
    if args.quick:
        args.meters, args.payments, args.rate_limit = 20_000, 10_000, 5_000.0
        args.verify_sample = min(args.verify_sample, 100)
    scenarios = [Scenario("burst", "storm burst", 0.0),
                 Scenario("rate-limited", "storm rate-limited", args.rate_limit)]
    if args.scenario == "both":
        # each scenario in a fresh interpreter: the node's processes are forked from this one, and
        # after a first scenario it holds (and they would inherit) that scenario's leftovers
        argv = list(sys.argv[1:] if argv is None else argv)
        for s in scenarios:
            done = subprocess.run([sys.executable, "-m", "bench.bench_storm", *argv, "--scenario", s.name,
                                   "--no-done"], check=False)
            if done.returncode != 0:
                emit(stage="failed", scenario=s.name, label=s.label, returncode=done.returncode)
    else:
        for s in scenarios:
            if args.scenario == s.name:
                run(s, args)
    if args.no_done:
        return 0
    emit(stage="done", note="one run per scenario: run the command 3 times and take the medians",
         loadavg=[round(x, 2) for x in os.getloadavg()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
