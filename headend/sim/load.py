"""Seeded daily load profiles: what each simulated meter used on each day, in whole watt-hours.

Sans I/O and deterministic: the energy of (seed, meter, day) comes from a hash, never from a shared
random stream, so the same day's read is the same whatever order days or meters are asked for, in any
process, after any restart; and asking again for a day gives the same read id and energy (a re-sent
read is a duplicate, not a second debit).

The shape (domestic, Indian climate; **not sourced** — the ranges are the brief's "3-12 kWh/day", the
seasonal and weekly factors are plausible guesses, no public MP West load curve was found):

* each meter has its own base level, uniform in ``3..12`` kWh/day;
* a season factor by month: the hot months before the monsoon highest (cooling), winter lowest;
* weekends about 8 % above weekdays (people at home);
* day-to-day noise of up to +/-15 %.

`daily_wh` is the one function; `DailyRead` is what the simulator reports for a day.

The simulator sends these reads itself when a day ends (`headend.sim.reads`, the `HesReads` frame:
docs/prepaid-headend.md); a file of them is still one command away:
``python -m headend.sim.load --meters meters.csv --from D --to D`` writes the days' reads of the meters in
a `jodo import meters` file as a `jodo import reads` file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import IO

__all__ = ["MAX_WH", "MIN_WH", "DailyRead", "daily_reads", "daily_wh", "main", "read_id", "write_reads_csv"]

_BASE_LO_WH = 3_000
_BASE_HI_WH = 12_000
# January..December; 1.0 = the meter's base level
_SEASON = (0.85, 0.85, 0.95, 1.15, 1.30, 1.25, 1.05, 1.00, 1.00, 0.95, 0.90, 0.85)
_WEEKEND = 1.08
_NOISE = 0.15
MIN_WH = int(_BASE_LO_WH * min(_SEASON) * (1 - _NOISE))
MAX_WH = int(_BASE_HI_WH * max(_SEASON) * _WEEKEND * (1 + _NOISE)) + 1


def _unit(seed: int, *parts: str) -> float:
    """A number in [0, 1) fixed by the seed and the parts."""
    key = ":".join((str(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def base_wh(seed: int, meter: str) -> int:
    """The meter's typical day, before season, weekday and noise."""
    return _BASE_LO_WH + int(_unit(seed, "base", meter) * (_BASE_HI_WH - _BASE_LO_WH))


def daily_wh(seed: int, meter: str, day: date) -> int:
    """Whole watt-hours ``meter`` used on ``day`` (an IST calendar day)."""
    factor = _SEASON[day.month - 1] * (_WEEKEND if day.weekday() >= 5 else 1.0)
    noise = 1 + _NOISE * (2 * _unit(seed, "day", meter, day.isoformat()) - 1)
    return round(base_wh(seed, meter) * factor * noise)


def read_id(meter: str, day: date) -> str:
    """The read's idempotency key: one per meter and day, the same every time it is reported."""
    return f"{meter}:{day.isoformat()}"


@dataclass(frozen=True, slots=True)
class DailyRead:
    """One meter's energy for one day, as the simulator reports it."""

    read_id: str
    meter: str  # the meter serial (the head-end knows serials, not accounts)
    day: date
    energy_wh: int

    def __str__(self) -> str:
        return f"DailyRead({self.read_id}, {self.energy_wh} Wh)"


def daily_reads(seed: int, meters: Iterable[str], day: date) -> Iterator[DailyRead]:
    """Every meter's read for ``day``, in the order given."""
    for meter in meters:
        yield DailyRead(read_id(meter, day), meter, day, daily_wh(seed, meter, day))


def write_reads_csv(
    seed: int, meters: Sequence[tuple[str, str]], first: date, last: date, out: IO[str]
) -> int:
    """Write (account, serial) meters' reads for ``first..last`` as a reads CSV; return the row count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["read_id", "account", "read_date", "energy_wh"])
    rows = 0
    day = first
    while day <= last:
        for account, serial in meters:
            writer.writerow([read_id(serial, day), account, day.isoformat(), daily_wh(seed, serial, day)])
            rows += 1
        day += timedelta(days=1)
    return rows


def _meters_of(path: str) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = {n.strip().lower(): n for n in reader.fieldnames or ()}
        if "account" not in names or "serial" not in names:
            raise SystemExit(f"{path}: needs account and serial columns (a `jodo import meters` file)")
        return [(row[names["account"]].strip(), row[names["serial"]].strip()) for row in reader
                if row[names["account"]] and row[names["serial"]]]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m headend.sim.load``: a reads CSV for the meters of a meters CSV, to stdout or --out."""
    parser = argparse.ArgumentParser(prog="python -m headend.sim.load", description=main.__doc__)
    parser.add_argument("--meters", required=True, help="a `jodo import meters` CSV (account, serial, ...)")
    parser.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first day")
    parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last day")
    parser.add_argument("--seed", type=int, default=0, help="load-profile seed (default 0)")
    parser.add_argument("--out", help="file to write (default stdout)")
    args = parser.parse_args(argv)
    if args.last < args.first:
        parser.error("--to is before --from")
    meters = _meters_of(args.meters)
    if args.out is None:
        write_reads_csv(args.seed, meters, args.first, args.last, sys.stdout)
        return 0
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        write_reads_csv(args.seed, meters, args.first, args.last, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
