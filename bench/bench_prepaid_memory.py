"""Resident bytes of a prepaid meter (issue 16): `python -m bench.bench_prepaid_memory [--meters N]
[--runs R]`.

Prints JSON lines (key "stage"), asserts nothing. For each kind of meter — ``postpaid`` (registered,
billed, paid: bench_fleet's billed meter), ``prepaid_1`` / ``prepaid_15`` / ``prepaid_31`` (prepaid,
then that many daily reads from 1 March), ``month_end`` (all of March and 30 April days read: the
most days a meter keeps, the previous month and the current one), ``estimate`` (15 days of March with
days 6-8 missing, so estimated, and days 6 and 7 then read: two true-ups, one estimate left) — the
domain decides one prototype meter (`MeterHost.step`/`assign`, read ids ``"{serial}:{read_date}"``);
then:

- ``packed_bytes``: the length of its packed record (`METER_FLAT.pack`, what a shard keeps resident
  and a snapshot stores);
- ``table_bytes_per_meter``: a `PackedTable` of N copies (each with its own account, serial and read
  ids) after `compact` — what a shard holds between snapshots — counted exactly (base + two arrays);
- ``rss_bytes_per_meter`` (per run, median): the VmRSS growth of a fresh process building that table
  (in chunks of 10 000, compacted after each, so the transient copies stay small), over N. It includes
  allocator slack; the table figure does not.

``--cpu``: also the µs to debit one read (unpack, `handle`, pack), median of 5: on a month-end meter
the read of the next month's first day (``read: month_end``), and on a meter holding March and 1-29
April the read of 30 April (``read: usual``; see `read_cpu`).

The same script runs on an older tree (``with_days`` is looked for; absent, ``dataclasses.replace``):
copy it into ``git archive <commit>`` output to measure before/after in one session.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import domain.prepaid
from bench.common import emit, proc_status
from domain.commands import (
    ClearPayment,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportConsumption,
    SetBillingMode,
)
from domain.enums import BillingMode
from domain.packed import PackedTable
from domain.policy import load_policy
from domain.shard import MeterHost
from domain.state import DayRead, Meter
from protocols.registry import METER_FLAT


def _replace_days(p: Any, days: tuple[DayRead, ...]) -> Any:  # an older tree: the days are a plain field
    return dataclasses.replace(p, days=days)


#: this tree keeps the days packed (domain/prepaid_days.py) and says how to set them
_with_days: Callable[[Any, tuple[DayRead, ...]], Any] = getattr(domain.prepaid, "with_days", _replace_days)

KINDS = ("postpaid", "prepaid_1", "prepaid_15", "prepaid_31", "month_end", "estimate")
CHUNK = 10_000


def account(i: int) -> str:
    return f"N{i:08d}"


def serial(i: int) -> str:
    return f"SR{i:010d}"


def _noon(day: dt.date) -> int:
    """06:30 UTC (12:00 IST) of ``day``: every read before it is dated today or earlier."""
    return int(dt.datetime(day.year, day.month, day.day, 6, 30, tzinfo=dt.UTC).timestamp())


def _days(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=k) for k in range(n)]


def prototype(kind: str) -> Meter:
    """Meter 0 of ``kind``, decided by the domain (nothing journaled)."""
    policy = load_policy()
    host = MeterHost(policy)
    a, s = account(0), serial(0)
    start = dt.date(2025, 3, 1)
    now = _noon(start) - 86_400

    def run(cmds: list[MeterCommand], at: int) -> None:
        host.assign(host.step(cmds, at), at)

    run([RegisterMeter(account=a, serial=s, head_end="h1", install_year=2022, relay_capable=True,
                       control_mode=2)], now)
    if kind == "postpaid":
        run([PostBill(account=a, bill_id=f"B{a}", amount_paise=123_456, due_date="2025-03-20", issued_at=now),
             ClearPayment(account=a, payment_id=f"P{a}", amount_paise=123_456, channel="upi", cashless=True,
                          paid_at=now)], now)
        m = host.get(a)
        assert m is not None
        return m
    run([SetBillingMode(account=a, mode=BillingMode.PREPAID, opening_balance_paise=10_000_000,
                        request_id=f"BM{a}")], now)
    if kind == "month_end":
        days = _days(start, 31 + 30)
    elif kind == "estimate":
        days = [d for d in _days(start, 15) if d.day not in (6, 7, 8)]
        days += [dt.date(2025, 3, 6), dt.date(2025, 3, 7)]
    else:
        days = _days(start, int(kind.split("_")[1]))
    clock = now
    for k, d in enumerate(days):
        clock = max(clock + 1, _noon(d + dt.timedelta(days=1)))
        run([ReportConsumption(account=a, read_id=f"{s}:{d.isoformat()}", read_date=d.isoformat(),
                               energy_wh=4_000 + (k * 737) % 5_000)], clock)
    m = host.get(a)
    assert m is not None and m.prepaid is not None
    return m


def cloner(proto: Meter) -> Callable[[int], bytes]:
    """i → meter ``i``'s packed record: ``proto`` with its own account, serial and read ids."""
    s0 = serial(0)
    p = proto.prepaid
    pack = METER_FLAT.pack
    if p is None:
        b = proto.bill

        def postpaid(i: int) -> bytes:
            a = account(i)
            return pack(dataclasses.replace(
                proto, account=a, serial=serial(i),
                bill=None if b is None else dataclasses.replace(b, bill_id=f"B{a}"),
                recent_payment_ids=tuple(f"P{a}" for _ in proto.recent_payment_ids)))

        return postpaid
    days = p.days

    def prepaid(i: int) -> bytes:
        si = serial(i)
        mine = tuple(dataclasses.replace(d, read_id=d.read_id.replace(s0, si)) for d in days)
        return pack(dataclasses.replace(proto, account=account(i), serial=si, prepaid=_with_days(p, mine)))

    return prepaid


def table_bytes(t: PackedTable) -> int:
    base = t.base()
    assert base is not None
    return sum(len(x) for x in base)


def build(kind: str, meters: int) -> dict[str, Any]:
    """In this process: the table of ``meters`` copies, and the RSS it took."""
    proto = prototype(kind)
    make = cloner(proto)
    gc.collect()
    before = proc_status(os.getpid(), "VmRSS")
    t = PackedTable()
    for lo in range(0, meters, CHUNK):
        for i in range(lo, min(meters, lo + CHUNK)):
            t[account(i)] = make(i)
        t.compact()
    gc.collect()
    after = proc_status(os.getpid(), "VmRSS")
    assert len(t) == meters and METER_FLAT.unpack(account(7), t[account(7)]).account == account(7)
    p = proto.prepaid
    return {"kind": kind, "meters": meters, "packed_bytes": len(METER_FLAT.pack(proto)),
            "days_kept": 0 if p is None else len(p.days),
            "table_bytes_per_meter": round(table_bytes(t) / meters, 1),
            "rss_bytes_per_meter": round((after - before) / meters, 1)}


def _memos() -> list[Callable[[], None]]:
    """How to empty the days' memos this tree has (domain.state's unpacked days, prepaid_days' parsed
    headers)."""
    import domain.prepaid_days
    import domain.state

    found = (getattr(domain.state, "_DAYS_SEEN", None), getattr(domain.prepaid_days, "_PARSED", None))
    return [memo.clear for memo in found if memo is not None]


def read_cpu(repeat: int = 2_000, kind: str = "month_end") -> float:
    """µs to debit one read as a shard does it: unpack the packed record, `handle` a ReportConsumption,
    pack the new state. ``month_end``: the meter holds all of March and 30 April, the read is for 1 May
    (a month closes: March's days are dropped; once a month per meter). ``usual``: the meter holds March
    and 1-29 April, the read is for 30 April (the next day, the most days a meter holds before it: a
    day's usual read at its dearest). The days' memos are emptied before each read (a shard's next read
    is for another meter)."""
    import time

    from domain.meter import handle

    clears = _memos()
    policy = load_policy()
    m = prototype("month_end")
    day = dt.date(2025, 5, 1)
    if kind == "usual":
        assert m.prepaid is not None
        m = dataclasses.replace(m, prepaid=_with_days(m.prepaid, m.prepaid.days[:-1]))
        day = dt.date(2025, 4, 30)
    packed = METER_FLAT.pack(m)
    cmd = ReportConsumption(account=m.account, read_id=f"{serial(0)}:{day.isoformat()}",
                            read_date=day.isoformat(), energy_wh=4_321)
    now = _noon(day + dt.timedelta(days=1))
    unpack, pack = METER_FLAT.unpack, METER_FLAT.pack
    t = time.perf_counter()
    for _ in range(repeat):
        for clear in clears:
            clear()
        new, events, _ = handle(unpack(m.account, packed), cmd, now, policy)
        pack(new)
    assert events
    return (time.perf_counter() - t) / repeat * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", action="store_true", help="also: µs per read debited on a month-end meter")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(build(args.child, args.meters)), flush=True)
        return
    kinds = args.kinds.split(",")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for run in range(args.runs):
        for kind in kinds:  # alternated: each run measures every kind
            out = subprocess.run([sys.executable, "-m", "bench.bench_prepaid_memory", "--child", kind,
                                  "--meters", str(args.meters)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.splitlines()[-1])
            results[kind].append(r)
            emit(stage="run", run=run, **r)
    if args.cpu:
        cpu: dict[str, list[float]] = {"month_end": [], "usual": []}
        for _ in range(5):  # alternated
            for kind, runs in cpu.items():
                runs.append(read_cpu(kind=kind))
        for kind, runs in cpu.items():
            emit(stage="read_cpu", read=kind, us_per_read=round(statistics.median(runs), 1),
                 runs=[round(c, 1) for c in runs])
    for kind, rs in results.items():
        if not rs:
            continue
        emit(stage="summary", kind=kind, meters=args.meters, runs=len(rs), packed_bytes=rs[0]["packed_bytes"],
             days_kept=rs[0]["days_kept"], table_bytes_per_meter=rs[0]["table_bytes_per_meter"],
             rss_bytes_per_meter=statistics.median(r["rss_bytes_per_meter"] for r in rs))


if __name__ == "__main__":
    main()
