"""headend.sim.load: seeded daily reads are deterministic, in range, and shaped by season and weekday."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from statistics import mean

from hypothesis import given
from hypothesis import strategies as st

from headend.sim.load import MAX_WH, MIN_WH, base_wh, daily_reads, daily_wh, main, read_id
from jodo.csvimport import CsvImport, ReadRecord

METERS = [f"MPW{i:08d}" for i in range(300)]
meters = st.sampled_from(METERS)
days = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))


@given(seed=st.integers(0, 2**32), meter=meters, day=days)
def test_a_day_s_read_is_whole_watt_hours_within_the_domestic_range(seed: int, meter: str, day: date) -> None:
    wh = daily_wh(seed, meter, day)
    assert isinstance(wh, int) and MIN_WH <= wh <= MAX_WH
    assert 3_000 <= base_wh(seed, meter) < 12_000


@given(seed=st.integers(0, 2**32), day=days)
def test_the_same_seed_meter_and_day_give_the_same_read_in_any_order(seed: int, day: date) -> None:
    forward = list(daily_reads(seed, METERS[:20], day))
    backward = list(daily_reads(seed, list(reversed(METERS[:20])), day))
    assert forward == list(reversed(backward))
    assert [r.read_id for r in forward] == [read_id(m, day) for m in METERS[:20]]


def test_another_seed_gives_another_fleet() -> None:
    day = date(2024, 5, 1)
    assert [daily_wh(1, m, day) for m in METERS] != [daily_wh(2, m, day) for m in METERS]


def test_fleet_average_is_highest_before_the_monsoon_and_weekends_are_above_weekdays() -> None:
    def fleet_month(year: int, month: int) -> float:
        first = date(year, month, 1)
        span = [first + timedelta(d) for d in range(28)]
        return mean(daily_wh(7, m, d) for m in METERS[:100] for d in span)

    assert fleet_month(2024, 5) > 1.3 * fleet_month(2024, 12)
    span = [date(2024, 9, 2) + timedelta(d) for d in range(28)]
    weekend = mean(daily_wh(7, m, d) for m in METERS for d in span if d.weekday() >= 5)
    weekday = mean(daily_wh(7, m, d) for m in METERS for d in span if d.weekday() < 5)
    assert weekend > 1.04 * weekday
    per_meter = [mean(daily_wh(7, m, d) for d in span) for m in METERS]
    assert max(per_meter) > 2.5 * min(per_meter)  # households differ, not one flat profile


def test_the_reads_file_of_a_meters_file_imports_cleanly_and_is_the_same_every_time(tmp_path: Path) -> None:
    meters = tmp_path / "meters.csv"
    meters.write_text("account,serial,head_end,install_year,relay_capable,control_mode,protected\n"
                      "N0000000001,MPW00000001,hes-sim,2022,true,2,false\n"
                      "N0000000002,MPW00000002,hes-sim,2022,true,4,false\n")
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    for out in (first, second):
        assert main(["--meters", str(meters), "--from", "2024-05-01", "--to", "2024-05-31",
                     "--seed", "3", "--out", str(out)]) == 0
    assert first.read_bytes() == second.read_bytes()
    records = list(CsvImport(first, "reads", now=datetime(2024, 6, 1, tzinfo=UTC).timestamp()))
    assert len(records) == 62 and {r.account for r in records} == {"N0000000001", "N0000000002"}
    assert all(isinstance(r, ReadRecord) for r in records)
    may_1 = [r for r in records if isinstance(r, ReadRecord) and r.read_date == date(2024, 5, 1)]
    assert [(r.read_id, r.energy_wh) for r in may_1] == [
        ("MPW00000001:2024-05-01", daily_wh(3, "MPW00000001", date(2024, 5, 1))),
        ("MPW00000002:2024-05-01", daily_wh(3, "MPW00000002", date(2024, 5, 1))),
    ]
