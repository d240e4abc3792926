"""Debiting prepaid meters' daily reads: the pure ledger (`domain.prepaid.apply_read`) on one core.

`python -m bench.bench_prepaid --meters 1000000 --runs 3`: each meter has an account already holding
``k`` real days of the month (``k`` = meter index mod 28, so every point of a month is represented) and
gets its next day's read (from `headend.sim.load`). Measures only the debit computation (pricing the month
with the new day, the balance); decoding, routing and the journal commit of the real path are not in it.
Prints one JSON line per run and a summary line with the median and the 1 crore extrapolation.
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meters", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
