"""`jodo import reads` with interval rows: a meter's intervals of one IST day are summed into one day read
("{account}:{day}") only when they cover the day exactly; otherwise the rows are refused with the line and
what is wrong. The whole file is checked before anything is yielded."""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from jodo.csvimport import CsvImport, CsvRejected, ReadRecord
from jodo.intervals import DayIntervals, interval_day
from jodo.values import IST

NOW = datetime(2024, 5, 29, 12, 0, tzinfo=IST).timestamp()
HEADER = "account,interval_start,interval_end,energy_wh\n"


def _day(account: str, day: date, minutes: int = 30, wh: int = 100, iso: bool = False,
         skip: set[int] | None = None) -> list[str]:
    """One meter's rows covering ``day`` in intervals of ``minutes`` (minus the indexes in ``skip``)."""
    start = datetime(day.year, day.month, day.day, tzinfo=IST)
    rows = []
    for k in range(24 * 60 // minutes):
        if skip and k in skip:
            continue
        a, b = start + timedelta(minutes=k * minutes), start + timedelta(minutes=(k + 1) * minutes)
        cells = (a.strftime("%Y-%m-%dT%H:%M"), b.strftime("%Y-%m-%dT%H:%M")) if iso else (
            str(int(a.timestamp())), str(int(b.timestamp())))
        rows.append(f"{account},{cells[0]},{cells[1]},{wh + k}\n")
    return rows


def _file(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "intervals.csv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    return path


def _rejected(path: Path) -> list[str]:
    with pytest.raises(CsvRejected) as e:
        list(CsvImport(path, "reads", now=NOW))
    return [str(x) for x in e.value.report.errors]


def test_a_day_of_half_hours_and_a_day_of_quarter_hours_become_one_day_read_each(tmp_path: Path) -> None:
    d1, d2 = date(2024, 5, 1), date(2024, 5, 2)
    rows = _day("N0000000001", d1) + _day("N0000000002", d1, minutes=15, iso=True)
    rows += _day("N0000000001", d2)[::-1]  # any order
    records = list(CsvImport(_file(tmp_path, rows), "reads", now=NOW))
    assert records == [
        ReadRecord(read_id="N0000000001:2024-05-01", account="N0000000001", read_date=d1,
                   energy_wh=sum(100 + k for k in range(48))),
        ReadRecord(read_id="N0000000002:2024-05-01", account="N0000000002", read_date=d1,
                   energy_wh=sum(100 + k for k in range(96))),
        ReadRecord(read_id="N0000000001:2024-05-02", account="N0000000001", read_date=d2,
                   energy_wh=sum(100 + k for k in range(48))),
    ]


def test_a_gap_refuses_the_file_naming_the_missing_interval_and_the_lines(tmp_path: Path) -> None:
    rows = _day("N0000000001", date(2024, 5, 1), skip={26}) + _day("N0000000002", date(2024, 5, 1))
    errors = _rejected(_file(tmp_path, rows))
    assert errors == ["line 2, interval_start: N0000000001 2024-05-01: intervals do not cover the day "
                      "(lines 2-48): missing 13:00-13:30"]


def test_an_overlap_is_refused_on_its_line_and_its_day_is_not_summed(tmp_path: Path) -> None:
    day = date(2024, 5, 1)
    noon = int(datetime(2024, 5, 1, 12, 15, tzinfo=IST).timestamp())
    rows = [*_day("N0000000001", day), f"N0000000001,{noon},{noon + 900},5\n"]
    errors = _rejected(_file(tmp_path, rows))
    assert errors == ["line 50, interval_start: interval 12:15-12:30 overlaps another interval of "
                      "N0000000001 on 2024-05-01 (minute 12:15 is already covered)"]


def test_an_interval_crossing_midnight_is_refused_and_both_days_it_touches_are_short(tmp_path: Path) -> None:
    d1, d2 = date(2024, 5, 1), date(2024, 5, 2)
    late = int(datetime(2024, 5, 1, 23, 45, tzinfo=IST).timestamp())
    rows = _day("N0000000001", d1, skip={47}) + _day("N0000000001", d2, skip={0})
    rows.append(f"N0000000001,{late},{late + 1800},7\n")
    errors = _rejected(_file(tmp_path, rows))
    assert errors[0].startswith("line 2, interval_start: N0000000001 2024-05-01: intervals do not cover")
    assert errors[0].endswith("missing 23:30-24:00")
    assert errors[1].endswith("missing 00:00-00:30")
    assert errors[2] == ("line 96, interval_start: interval 2024-05-01 23:45-2024-05-02 00:15 crosses "
                         "midnight IST: split it at 00:00")


def test_intervals_not_on_whole_minutes_or_ending_after_now_are_refused(tmp_path: Path) -> None:
    start = int(datetime(2024, 5, 1, 10, 0, tzinfo=IST).timestamp())
    rows = [f"N0000000001,{start + 30},{start + 1830},5\n",
            "N0000000002,2024-05-29T11:30,2024-05-29T12:30,5\n"]
    errors = _rejected(_file(tmp_path, rows))
    assert "is not on whole minutes" in errors[0] and errors[0].startswith("line 2,")
    assert any(e.startswith("line 3, interval_end:") and "is after now" in e for e in errors)


def test_nothing_is_yielded_when_one_day_is_bad_and_skip_bad_yields_the_good_days(tmp_path: Path) -> None:
    rows = _day("N0000000001", date(2024, 5, 1)) + _day("N0000000002", date(2024, 5, 1), skip={3})
    path = _file(tmp_path, rows)
    job = CsvImport(path, "reads", now=NOW)
    with pytest.raises(CsvRejected):
        next(iter(job))
    assert not job.check().ok and job.check().rejected == 47
    job = CsvImport(path, "reads", now=NOW, skip_bad=True)
    assert [r.account for r in job] == ["N0000000001"]  # type: ignore[union-attr]
    assert job.report.rejected == 47 and job.report.accepted == 48
    with (tmp_path / "intervals.rejects.csv").open() as f:
        rejects = list(csv.DictReader(f))
    assert len(rejects) == 47 and {r["account"] for r in rejects} == {"N0000000002"}
    assert "missing 01:30-02:00" in rejects[0]["error"]


def test_an_interval_may_end_at_24_00_and_one_interval_may_be_the_whole_day() -> None:
    day, first, last = interval_day(int(datetime(2024, 5, 1, 23, 30, tzinfo=IST).timestamp()),
                                    int(datetime(2024, 5, 2, 0, 0, tzinfo=IST).timestamp()))
    assert (day, first, last) == (date(2024, 5, 1), 23 * 60 + 30, 24 * 60)  # may end at 24:00
    summed = DayIntervals()
    assert summed.add(2, "A", 0 + 1_714_501_800, 1_714_501_800 + 86_400, 9)[1] is None  # 2024-05-01 00:00 IST
    (d,) = summed.days.values()
    assert d.gaps() == [] and summed.problem(d, 10_000_000) is None
