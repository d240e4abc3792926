"""The naive design: one Thespian actor per meter. `python -m bench.bench_naive [--cap N] [--seconds S]`.

Prints JSON lines, asserts nothing. multiprocTCPBase on loopback (bind patch applied and
THESPIAN_BASE_IPADDR=127.0.0.1, via actors.facade.ActorRuntime), a fresh admin port. Measured:

- creation: meter actors created from outside (each registered with its own Meter state, the
  domain's `handle`) until `--cap` actors or `--seconds` elapse; actors/s;
- memory: RSS of every meter actor process (sum of /proc/<pid>/status VmRSS), per actor = per meter;
- throughput: round-trip payments/s — one `ClearPayment` told to every actor, each actor decides it
  (domain `handle`, default policy) and replies with its encoded relay command; `--rounds` rounds,
  all actors in flight at once. No journal: this flatters the naive design.

Every actor system started here is shut down; meter actor processes still alive afterwards (their
pids came from the actors themselves) are killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from thespian.actors import Actor, ActorExitRequest

from actors.facade import ActorRuntime, RuntimeConfig
from bench.common import emit, free_port, pss_bytes, rss_bytes
from domain.commands import ClearPayment, RegisterMeter
from domain.effects import SendRelayCommand
from domain.enums import RelayState
from domain.meter import handle
from domain.policy import Policy, load_policy
from domain.state import Meter
from protocols import codec

DUES = 150_000


class Register:
    """Make this actor the meter `account` (disconnected, owing DUES)."""

    def __init__(self, account: str, now: int) -> None:
        self.account = account
        self.now = now

    def __str__(self) -> str:  # O(1): Thespian formats every message (THESPIAN.md)
        return "Register"

    __repr__ = __str__


class Pay:
    def __init__(self, payment_id: str, amount_paise: int, now: int) -> None:
        self.payment_id = payment_id
        self.amount_paise = amount_paise
        self.now = now

    def __str__(self) -> str:
        return "Pay"

    __repr__ = __str__


class Done:
    def __init__(self, pid: int, body: bytes) -> None:
        self.pid = pid
        self.body = body

    def __str__(self) -> str:
        return "Done"

    __repr__ = __str__


class MeterActor(Actor):  # type: ignore[misc]  # thespian is untyped
    """One meter, one process."""

    policy: Policy | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter: Meter | None = None
        self.registered: Meter | None = None  # each round pays a meter that is disconnected and owing

    def receiveMessage(self, message: Any, sender: Any) -> None:  # thespian's name
        if isinstance(message, ActorExitRequest):
            return
        if MeterActor.policy is None:
            MeterActor.policy = load_policy()
        policy = MeterActor.policy
        if isinstance(message, Register):
            command = RegisterMeter(account=message.account, serial="MPW" + message.account[-8:],
                                    head_end="hes-1", install_year=2022, relay_capable=True,
                                    control_mode=2, relay=RelayState.DISCONNECTED,
                                    opening_dues_paise=DUES)
            self.meter, _, _ = handle(None, command, message.now, policy)
            self.registered = self.meter
            self.send(sender, Done(os.getpid(), b""))
        elif isinstance(message, Pay) and self.registered is not None:
            self.meter = self.registered  # every round is a real reconnect decision
            credit = ClearPayment(account=self.meter.account, payment_id=message.payment_id,
                                  amount_paise=message.amount_paise, channel="upi", cashless=True,
                                  paid_at=message.now)
            new, _, effects = handle(self.meter, credit, message.now, policy)
            if new is not None:
                self.meter = new
            relay = [e for e in effects if isinstance(e, SendRelayCommand)]
            self.send(sender, Done(os.getpid(), codec.encode_many(relay)))


def collect(system: Any, expected: int, timeout: float) -> list[Done]:
    got: list[Done] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        reply = system.listen(remaining)
        if type(reply).__name__ == "Done":
            got.append(reply)
    return got


def main() -> None:
    # Run as `python -m`, this file is __main__: send the classes the actors import (bench.bench_naive),
    # or isinstance fails on the other side.
    from bench import bench_naive as mod

    parser = argparse.ArgumentParser(prog="python -m bench.bench_naive", description=__doc__.split("\n")[0])
    parser.add_argument("--cap", type=int, default=300, help="most meter actors to create (default 300)")
    parser.add_argument("--seconds", type=float, default=60.0, help="creation time budget (default 60)")
    parser.add_argument("--rounds", type=int, default=3, help="payment rounds over all actors; median")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for replies")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="jodo-naive-"))
    now = int(time.time())
    port = free_port()
    runtime = ActorRuntime.start(RuntimeConfig(admin_port=port, log_file=work / "naive.log"))
    system = runtime._system  # createActor/listen without a request id
    emit(stage="start", bench="naive", base="multiprocTCPBase", admin_port=port, cap=args.cap,
         seconds_budget=args.seconds, cpus=os.cpu_count(), python=sys.version.split()[0])
    pids: set[int] = set()
    try:
        # ---- creation
        addresses: list[Any] = []
        started = time.perf_counter()
        stop_reason = "cap"
        while len(addresses) < args.cap:
            if time.perf_counter() - started > args.seconds:
                stop_reason = "time"
                break
            try:
                addr = system.createActor("bench.bench_naive.MeterActor")
            except Exception as exc:  # thespian's "could not create": the naive design's wall
                stop_reason = f"error: {type(exc).__name__}: {exc}"[:200]
                break
            addresses.append(addr)
        created_s = time.perf_counter() - started
        n = len(addresses)
        for i, addr in enumerate(addresses):
            system.tell(addr, mod.Register(f"N{i:010d}", now))
        registered = collect(system, n, args.timeout)
        pids = {d.pid for d in registered}
        emit(stage="create", actors=n, seconds=round(created_s, 2), actors_per_s=round(n / created_s, 1),
             stopped_by=stop_reason, registered=len(registered))

        # ---- memory
        total = sum(rss_bytes(p) for p in pids)
        pss = sum(pss_bytes(p) for p in pids)
        emit(stage="memory", actor_processes=len(pids), rss_total_mb=round(total / 2**20, 1),
             rss_per_meter_kb=round(total / max(1, len(pids)) / 1024),
             pss_per_meter_kb=round(pss / max(1, len(pids)) / 1024))

        # ---- round trips
        rates = []
        for r in range(args.rounds + 1):  # round 0 warms up (first outside send to each actor): not counted
            t0 = time.perf_counter()
            for i, addr in enumerate(addresses):
                system.tell(addr, mod.Pay(f"pay-{r}-{i}", DUES, now))
            replies = collect(system, n, args.timeout)
            took = time.perf_counter() - t0
            if r > 0:
                rates.append(len(replies) / took)
            emit(stage="round", run=r, warmup=r == 0, payments=n, replies=len(replies),
                 seconds=round(took, 3),
                 payments_per_s=round(len(replies) / took),
                 relay_commands=sum(1 for d in replies if len(d.body) > 1))
        emit(stage="naive", actors=n, actors_per_s=round(n / created_s, 1),
             rss_per_meter_kb=round(total / max(1, len(pids)) / 1024),
             pss_per_meter_kb=round(pss / max(1, len(pids)) / 1024),
             payments_per_s=round(statistics.median(rates)) if rates else 0,
             runs_payments_per_s=[round(x) for x in rates])
    finally:
        t0 = time.perf_counter()
        runtime.shutdown()
        left = [p for p in pids if rss_bytes(p) > 0]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        emit(stage="shutdown", seconds=round(time.perf_counter() - t0, 2), killed_after=len(left))


if __name__ == "__main__":
    main()
