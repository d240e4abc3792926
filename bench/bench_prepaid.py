"""Debiting prepaid meters' daily reads: the pure ledger (`domain.prepaid.apply_read`) on one core.

`python -m bench.bench_prepaid --meters 1000000 --runs 3`: each meter has an account already holding
``k`` real days of the month (``k`` = meter index mod 28, so every point of a month is represented) and
gets its next day's read (from `headend.sim.load`). Measures only the debit computation (pricing the month
with the new day, the balance); decoding, routing and the journal commit of the real path are not in it.
Prints one JSON line per run and a summary line with the median and the 1 crore extrapolation.

`python -m bench.bench_prepaid --node --meters 1000000 --groups 2 --runs 3`: through a real node. The fleet
is generated without the actors (`bench.bench_fleet.generate`, ``--via clone``: prepaid meters with an
opening balance of Rs 5 000, each already holding this month's days before the first read day), a node
(`bench_fleet.start_node`: the real actor tree, SQLite shard stores, no head-end) recovers it; then, per run,
one day's read of every meter (the next day each run, so each read is debited, never a duplicate) is sent as
`ReportConsumption` records in `MeterCommandBatch`es of ``--batch`` (10 000) to the owning shard group, as
`NodeClient.send` / ``POST /v1/admin/meter-commands`` send them, but pipelined: up to ``--in-flight``
batches outstanding per group. The clock stops when every batch's `MeterCommandBatchResult` is back (a shard
answers after the journal commit of the batch's debits). Reported: wall seconds, reads/s, CPU per read of
each process (the sender: building and encoding the records, what a head-end gateway would spend; each shard
group; the rest of the node), and a sample of meters checked to hold the day's read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import date, timedelta

from bench.common import emit
from domain.policy import load_policy
from domain.prepaid import DayRead, PrepaidAccount, apply_read
from headend.sim.load import daily_wh, read_id

CRORE = 10_000_000


def _accounts(n: int, first: date) -> list[tuple[str, PrepaidAccount, str, int]]:
    """Per meter: (read id, account before the read, day, Wh). The 28 month-so-far histories are shared
    between meters (an account is immutable; the debit's cost depends on how many days it holds, not on
    whose they are), so 10 lakh accounts fit in memory."""
    history = [tuple(DayRead(day=(first + timedelta(d)).isoformat(), read_id=f"H:{d}",
                             energy_wh=daily_wh(1, f"H{k}", first + timedelta(d))) for d in range(k))
               for k in range(28)]
    out = []
    for i in range(n):
        serial = f"MPW{i:08d}"
        k = i % 28
        day = first + timedelta(k)
        out.append((read_id(serial, day), PrepaidAccount(balance_paise=500_000, days=history[k]),
                    day.isoformat(), daily_wh(1, serial, day)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--node", action="store_true", help="through a real node (see above)")
    parser.add_argument("--groups", type=int, default=2, help="--node: shard groups (default 2)")
    parser.add_argument("--batch", type=int, default=10_000, help="--node: reads per MeterCommandBatch")
    parser.add_argument("--in-flight", type=int, default=2, help="--node: batches outstanding per group")
    parser.add_argument("--dir", default=None, help="--node: work dir (default: a temp dir, removed)")
    args = parser.parse_args()
    if args.node:
        from bench.bench_prepaid_node import run_node

        run_node(args)
        return
    policy = load_policy()
    work = _accounts(args.meters, date(2026, 11, 1))
    seconds = []
    for run in range(args.runs):
        started = time.perf_counter()
        debited = 0
        for rid, account, day, wh in work:
            _, debits = apply_read(account, rid, day, wh, policy)
            debited += len(debits)
        took = time.perf_counter() - started
        seconds.append(took)
        emit(bench="prepaid", run=run, meters=args.meters, debits=debited, seconds=round(took, 3),
             reads_per_s=round(args.meters / took), load=os.getloadavg()[0])
    median = statistics.median(seconds)
    emit(bench="prepaid", summary=True, meters=args.meters, runs=args.runs, median_s=round(median, 3),
         us_per_read=round(median / args.meters * 1e6, 2),
         crore_extrapolated_s=round(median / args.meters * CRORE, 1), load=os.getloadavg())


if __name__ == "__main__":
    main()
