"""The ceiling: one process, no actors. `python -m bench.bench_ceiling [--meters N] [--batches 1000,10000]`.

Prints JSON lines (and a short line for humans on stderr), asserts nothing. The same work one payment
does inside jodo, with nothing in between: for each batch

1. decode the encoded `PaymentReceived` records (protocols.codec, validated: they come from outside);
2. turn each into `ClearPayment` and decide the batch on the meter entities (`MeterHost.step`, default
   policy), every meter registered, disconnected and owing the amount paid, and resident packed as in
   a shard group (``protocols.registry.METER_PACKING``: each decide unpacks the meter, each assign
   packs it);
3. journal the events as a shard does (`actors.shard_service.journal_records`: a common payment's
   events fused into one record, each encoded with protocols.codec) in ONE durable commit (SQLite
   ShardStore, synchronous=full), then `MeterHost.assign`;
4. encode the resulting relay commands (`SendRelayCommand`, codec.encode_many).

GC as in a shard actor: meters frozen (gc.freeze) after loading, gen-0 threshold 50 000.
No ledger (desk) write, no head-end, no read-back: this is an upper bound for the shard side of the
batch path, not a like-for-like copy of jodo. payments/s is the median of `--runs` runs, each over
`--payments` payments on a fresh store (meters registered once, each run pays a distinct slice);
``cpu_us_per_payment`` is this process's CPU time per payment (wall time suffers on a busy machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from actors.shard_service import journal_records
from domain.commands import ClearPayment, RegisterMeter
from domain.effects import SendRelayCommand
from domain.enums import RelayState
from domain.policy import load_policy
from domain.shard import MeterHost
from protocols import codec
from protocols.payments import PaymentReceived
from protocols.registry import METER_PACKING
from storage import StoreOptions, open_shard_store

DUES = 150_000
HEAD_END = "hes-1"


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def account(i: int) -> str:
    return f"N{i:010d}"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def register(host: MeterHost, meters: int, now: int) -> None:
    """Load `meters` registered meters as a snapshot load would: one meter registered through the
    domain (disconnected, owing DUES), copied under every account (`MeterHost.restore`), then the
    timers rebuilt. Registering each one through `handle` gives the same states, only slower."""
    command = RegisterMeter(account=account(0), serial="MPW00000000", head_end=HEAD_END, install_year=2022,
                            relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                            opening_dues_paise=DUES)
    step = host.step([command], now)
    template = step.states[account(0)]
    host.restore(replace(template, account=account(i), serial=f"MPW{i:08d}") for i in range(meters))
    host.rebuild_timers(now)


def encoded_batches(start: int, total: int, batch: int, now: int) -> list[bytes]:
    out = []
    for lo in range(start, start + total, batch):
        out.append(codec.encode_many(
            PaymentReceived(payment_id=f"pay-{i}", account=account(i), amount_paise=DUES, channel="upi",
                            gateway="razorpay", paid_at=now, received_at=now)
            for i in range(lo, min(start + total, lo + batch))
        ))
    return out


#: where the CPU goes, per batch: decode + ClearPayment, MeterHost.step, journal records, the
#: commit, MeterHost.assign, relay commands encoded (the ``stages`` of each run record)
STAGES = ("decode", "step", "records", "commit", "assign", "commands")


def run(
    host: MeterHost, store_dir: Path, batches: list[bytes], now: int, stages: dict[str, float] | None = None
) -> tuple[float, float, int, int, int]:
    """Process every batch; returns (seconds, CPU seconds of this process, payments, journal records,
    relay commands encoded). ``stages``: CPU seconds by `STAGES`, added to."""
    if stages is None:
        stages = {}
    store = open_shard_store(store_dir, 0, StoreOptions(synchronous="full"))
    paid = events_total = commands_total = 0
    command_bytes = 0
    clock = time.process_time
    started, cpu = time.perf_counter(), clock()
    for data in batches:
        t0 = clock()
        received = codec.decode_many(data, expect=PaymentReceived)
        credits = [
            ClearPayment(account=p.account, payment_id=p.payment_id, amount_paise=p.amount_paise,
                         channel=p.channel, cashless=p.cashless, paid_at=p.paid_at)
            for p in received
        ]
        t1 = clock()
        step = host.step(credits, now)
        t2 = clock()
        events = journal_records(step.events)  # as a shard journals them (a common payment: one)
        t3 = clock()
        store.commit(events)
        t4 = clock()
        host.assign(step, now)
        t5 = clock()
        relay = [e for e in step.effects if isinstance(e, SendRelayCommand)]
        command_bytes += len(codec.encode_many(relay))
        for name, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, clock() - t5),
                                 strict=True):
            stages[name] = stages.get(name, 0.0) + seconds
        paid += len(received)
        events_total += len(events)
        commands_total += len(relay)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    return took, cpu, paid, events_total, commands_total


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=725_000, help="registered meters (default 725000)")
    parser.add_argument("--payments", type=int, default=100_000, help="payments per run (default 100000)")
    parser.add_argument("--batches", default="1000,10000", help="batch sizes, comma separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per batch size; the median is reported")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store files")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batches.split(",") if s]
    needed = args.payments * args.runs * len(sizes)
    if needed > args.meters:
        parser.error(f"--payments x --runs x batch sizes = {needed:,} > --meters {args.meters:,}: "
                     "every payment must reconnect a distinct meter")
    root = args.dir or Path(tempfile.mkdtemp(prefix="jodo-ceiling-"))
    now = int(time.time())
    gc.disable()  # as the shard service does while loading: meters hold no cycles
    host = MeterHost(load_policy(), packing=METER_PACKING)  # as a ShardService keeps its meters
    base = rss_bytes()
    started = time.perf_counter()
    register(host, args.meters, now)
    took = time.perf_counter() - started
    emit(stage="start", bench="ceiling", meters=args.meters, payments=args.payments, runs=args.runs,
         batches=sizes, cpus=os.cpu_count(), python=sys.version.split()[0], dir=str(root),
         register_seconds=round(took, 2), bytes_per_meter=round((rss_bytes() - base) / max(1, args.meters)))
    # The shard actors' GC settings (actors/shard.py, actors/base.py): the held meters frozen out of
    # the cyclic GC's reach after loading, a 50 000-object young generation.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    gc.enable()
    next_account = 0
    for size in sizes:
        rates: list[float] = []
        costs: list[float] = []  # CPU µs per payment (this process: a busy machine inflates wall time)
        for r in range(args.runs):
            batches = encoded_batches(next_account, args.payments, size, now)
            next_account += args.payments
            stages: dict[str, float] = {}
            seconds, cpu, paid, events, commands = run(host, root / f"b{size}-r{r}", batches, now, stages)
            rates.append(paid / seconds)
            costs.append(cpu / paid * 1e6)
            emit(stage="run", batch=size, run=r + 1, payments=paid, seconds=round(seconds, 3),
                 payments_per_s=round(paid / seconds), cpu_us_per_payment=round(costs[-1], 1), events=events,
                 relay_commands=commands, load=round(os.getloadavg()[0], 2),
                 stages_cpu_us_per_payment={k: round(v / paid * 1e6, 1) for k, v in stages.items()})
        median = statistics.median(rates)
        emit(stage="ceiling", batch=size, runs=args.runs, payments_per_s=round(median),
             runs_payments_per_s=[round(x) for x in rates],
             cpu_us_per_payment=round(statistics.median(costs), 1))
        print(f"ceiling, batch {size:,}: median {median:,.0f} payments/s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
