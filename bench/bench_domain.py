"""Meter-core throughput and memory: ``python -m bench.bench_domain [--meters N] [--runs R]``.

One process, no actors: the pure core as a MeterShard would drive it. Per run:

1. register N meters (``handle``: decide + evolve in one pass) into a dict keyed by account;
2. a bill and a cashless on-time payment for every meter (PostBill, ClearPayment: 3 events each);
3. apply only: replay the events of step 2 with ``evolve`` onto the registered states
   (what recovery from a snapshot + journal tail does);
4. the resident form: the same N meters registered, billed and paid through a `MeterHost` that keeps
   them packed as a shard group does (``METER_PACKING``: ``step`` + ``assign`` in batches of 10 000),
   then the journal of step 2 replayed into such a host (``MeterHost.replay`` + ``settle``).

Memory is the RSS growth while N meters are resident (after a full collection), divided by N, once
registered and once billed and paid, for a plain dict of `Meter` objects (steps 1-2) and for the host
(step 4: what a shard holds per meter, its timers and counts included); a tracemalloc count on a
smaller sample gives the same figures without allocator slack. Rates are per CPU second of this
(single-threaded) process
(``time.process_time``), so a busy machine does not lower them; the wall time of each run is printed
too, with a calibration figure (``sum(range(1000))`` in microseconds) to compare machines. Prints
one JSON object per line; asserts nothing. Medians over the runs. The defaults (1 M meters, 3 runs)
take about five minutes and 1.5 GB on a slow shared 2-core VM; ``--meters 100000`` for a quick look.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Iterator
from typing import Any

from domain.commands import ClearPayment, MeterCommand, PostBill, RegisterMeter
from domain.events import MeterEvent
from domain.meter import evolve, handle
from domain.policy import load_policy
from domain.shard import MeterHost
from domain.state import Meter
from protocols.registry import METER_PACKING

POLICY = load_policy()
T0 = 1_740_800_000  # 2025-03-01 09:10 IST
DUE_DATE = "2025-03-10"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def accounts(n: int) -> Iterator[tuple[str, str]]:
    for i in range(n):
        yield f"N{i:010d}", f"SM{i:09d}"


def registration(i: int, account: str, serial: str) -> RegisterMeter:
    return RegisterMeter(
        account=account,
        serial=serial,
        head_end=("hes-a", "hes-b")[i & 1],
        install_year=2020 + i % 5,
        relay_capable=True,
        control_mode=2,
    )


def bill(i: int, account: str) -> PostBill:
    return PostBill(account=account, bill_id=f"B2503-{i:08d}", amount_paise=50_000 + (i % 997) * 100,
                    due_date=DUE_DATE, issued_at=T0)


def payment(i: int, account: str) -> ClearPayment:
    return ClearPayment(account=account, payment_id=f"PAY{i:010d}", amount_paise=50_000 + (i % 997) * 100,
                        channel="upi", cashless=True, paid_at=T0 + 86_400)


def register_all(n: int) -> tuple[dict[str, Meter], int]:
    meters: dict[str, Meter] = {}
    events = 0
    for account, serial in accounts(n):
        command = registration(len(meters), account, serial)
        state, evs, _ = handle(None, command, T0, POLICY)
        assert state is not None
        meters[account] = state
        events += len(evs)
    return meters, events


def bill_and_pay(
    meters: dict[str, Meter], keep: int
) -> tuple[int, int, list[tuple[str, tuple[MeterEvent, ...]]]]:
    """A bill and a full cashless payment per meter; returns (commands, events, first ``keep`` logs)."""
    log: list[tuple[str, tuple[MeterEvent, ...]]] = []
    events = commands = 0
    for i, account in enumerate(meters):
        state, evs1, _ = handle(meters[account], bill(i, account), T0, POLICY)
        state, evs2, _ = handle(state, payment(i, account), T0 + 86_400, POLICY)
        assert state is not None
        meters[account] = state
        commands += 2
        events += len(evs1) + len(evs2)
        if i < keep:
            log.append((account, evs1 + evs2))
    return commands, events, log


def apply_only(start: dict[str, Meter], log: list[tuple[str, tuple[MeterEvent, ...]]]) -> int:
    states = dict(start)
    n = 0
    for account, evs in log:
        state = states[account]
        for event in evs:
            state = evolve(state, event)
        states[account] = state
        n += len(evs)
    return n


def host_steps(host: MeterHost, commands: Iterator[MeterCommand], now: int, batch: int = 10_000) -> int:
    """Decide and assign ``commands`` in batches, as a shard group does; returns the events."""
    events = 0
    chunk: list[MeterCommand] = []
    for command in commands:
        chunk.append(command)
        if len(chunk) == batch:
            step = host.step(chunk, now)
            host.assign(step, now)
            events += len(step.events)
            chunk = []
    if chunk:
        step = host.step(chunk, now)
        host.assign(step, now)
        events += len(step.events)
    return events


def host_register(host: MeterHost, n: int) -> int:
    return host_steps(host, (registration(i, a, s) for i, (a, s) in enumerate(accounts(n))), T0)


def host_bill_and_pay(host: MeterHost, n: int) -> int:
    events = host_steps(host, (bill(i, a) for i, (a, _) in enumerate(accounts(n))), T0)
    return events + host_steps(host, (payment(i, a) for i, (a, _) in enumerate(accounts(n))), T0 + 86_400)


def host_run(n: int, apply_sample: int) -> dict[str, float]:
    """Step 4: the meters resident in a `MeterHost` as a shard group keeps them."""
    gc.collect()
    rss0 = rss_bytes()
    host = MeterHost(POLICY, packing=METER_PACKING)
    t = time.process_time()
    host_register(host, n)
    reg_s = time.process_time() - t
    gc.collect()
    rss_registered = (rss_bytes() - rss0) / n
    t = time.process_time()
    host_bill_and_pay(host, n)
    pay_s = time.process_time() - t
    gc.collect()
    rss_billed = (rss_bytes() - rss0) / n
    del host
    gc.collect()
    # replay: registered meters + the journal of their bill and payment, packed once at the end
    start, _ = register_all(apply_sample)
    working = dict(start)
    _, _, log = bill_and_pay(working, apply_sample)
    del working
    host = MeterHost(POLICY, packing=METER_PACKING)
    host.restore(start.values())
    del start
    events = [e for _, evs in log for e in evs]
    del log
    gc.collect()
    t = time.process_time()
    for event in events:
        host.replay(event)
    host.settle()
    replay_s = time.process_time() - t
    return {
        "host_register_commands_per_s": n / reg_s,
        "host_bill_pay_commands_per_s": 2 * n / pay_s,
        "host_replay_events_per_s": len(events) / replay_s,
        "host_rss_bytes_per_meter_registered": rss_registered,
        "host_rss_bytes_per_meter_billed_paid": rss_billed,
    }


def host_traced_bytes_per_meter(sample: int) -> tuple[float, float]:
    """tracemalloc bytes per meter resident in a packing `MeterHost`, registered and billed and paid."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    host = MeterHost(POLICY, packing=METER_PACKING)
    host_register(host, sample)
    gc.collect()
    registered = (tracemalloc.get_traced_memory()[0] - base) / sample
    host_bill_and_pay(host, sample)
    gc.collect()
    billed = (tracemalloc.get_traced_memory()[0] - base) / sample
    tracemalloc.stop()
    del host
    return registered, billed


def traced_bytes_per_meter(sample: int) -> tuple[float, float]:
    """tracemalloc bytes per meter (dict entry + key + state), registered and then billed and paid."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    meters, _ = register_all(sample)
    gc.collect()
    registered = (tracemalloc.get_traced_memory()[0] - base) / sample
    bill_and_pay(meters, 0)
    gc.collect()
    billed = (tracemalloc.get_traced_memory()[0] - base) / sample
    tracemalloc.stop()
    del meters
    return registered, billed


def one_run(n: int, apply_sample: int) -> dict[str, float]:
    wall = time.perf_counter()
    gc.collect()
    rss0 = rss_bytes()
    t = time.process_time()
    meters, reg_events = register_all(n)
    reg_s = time.process_time() - t
    gc.collect()
    rss_registered = (rss_bytes() - rss0) / n

    t = time.process_time()
    commands, events, _ = bill_and_pay(meters, 0)
    pay_s = time.process_time() - t
    gc.collect()
    rss_billed = (rss_bytes() - rss0) / n
    del meters
    gc.collect()

    # Apply only, on a separate sample: registered states + the journal of their bill and payment.
    start, _ = register_all(apply_sample)
    working = dict(start)
    _, _, log = bill_and_pay(working, apply_sample)
    del working
    gc.collect()
    t = time.process_time()
    applied = apply_only(start, log)
    apply_s = time.process_time() - t
    del start, log
    host = host_run(n, apply_sample)
    return {
        "register_commands_per_s": n / reg_s,
        "register_events_per_s": reg_events / reg_s,
        "bill_pay_commands_per_s": commands / pay_s,
        "decide_evolve_events_per_s": (reg_events + events) / (reg_s + pay_s),
        "apply_events_per_s": applied / apply_s,
        "rss_bytes_per_meter_registered": rss_registered,
        "rss_bytes_per_meter_billed_paid": rss_billed,
        "events_per_meter": (reg_events + events) / n,
        **host,
        "wall_s": time.perf_counter() - wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="meter-core throughput and memory")
    parser.add_argument("--meters", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--apply-sample", type=int, default=200_000, help="meters replayed in step 3")
    parser.add_argument("--trace-sample", type=int, default=50_000, help="meters under tracemalloc")
    args = parser.parse_args(argv)
    # How fast this machine runs Python, to compare numbers across machines (a 2023 laptop: ~8 us).
    calibration = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    header = {"bench": "domain", "python": sys.version.split()[0], "meters": args.meters}
    print(json.dumps({**header, "calibration_sum_range_1000_us": round(calibration, 1)}))
    runs: list[dict[str, float]] = []
    for i in range(args.runs):
        result = one_run(args.meters, min(args.apply_sample, args.meters))
        runs.append(result)
        print(json.dumps({"run": i + 1, **{k: round(v, 1) for k, v in result.items()}}), flush=True)
    medians: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
    registered, billed = traced_bytes_per_meter(min(args.trace_sample, args.meters))
    medians["tracemalloc_bytes_per_meter_registered"] = round(registered, 1)
    medians["tracemalloc_bytes_per_meter_billed_paid"] = round(billed, 1)
    registered, billed = host_traced_bytes_per_meter(min(args.trace_sample, args.meters))
    medians["host_tracemalloc_bytes_per_meter_registered"] = round(registered, 1)
    medians["host_tracemalloc_bytes_per_meter_billed_paid"] = round(billed, 1)
    print(json.dumps({"median_of_runs": args.runs, **medians}))


if __name__ == "__main__":
    main()
