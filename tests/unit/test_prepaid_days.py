"""The usual read worked on the packed days (issue 16, CPU per read): `prepaid_days.appended` and `Packed`,
`prepaid.next_day_debit` and `with_read` give exactly what unpacking, `apply_read` and repacking give —
the same bytes, so a state is the same whichever path built it — and they do take the fast path for the
reads a shard mostly sees (the next day's, the first of a month)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import prepaid_days
from domain.prepaid import (
    account_of,
    already_read,
    apply_read,
    daily_charge_of,
    daily_charge_paise,
    kept_days,
    next_day_debit,
    oldest_open_month,
    oldest_open_month_of,
    with_days,
    with_read,
)
from domain.state import DayRead, PrepaidState
from tests.unit.test_meter_support import POLICY, Sim, at

FIRST = date(2025, 1, 20)  # rows from late January to April: one, two or three months, a February
PREFIX = "SR0000000042:"


@st.composite
def rows(draw: st.DrawFn) -> list[prepaid_days.Row]:
    """Sorted rows, one per day, of every shape a meter keeps: canonical real ids, estimates, odd ids,
    another prefix, Wh up to past a u16."""
    offsets = sorted(draw(st.sets(st.integers(0, 95), max_size=40)))
    out = []
    for k in offsets:
        day = (FIRST + timedelta(days=k)).isoformat()
        est = draw(st.integers(0, 9)) == 0
        shape = draw(st.integers(0, 19))
        rid = ("est:" + day if est else PREFIX + day) if shape < 16 else (
            "other:" + day if shape < 18 else f"odd-{k}" if shape < 19 else "est:" + day)
        wh = draw(st.integers(0, 9_000) if draw(st.integers(0, 29)) else st.integers(0, 70_000))
        out.append((day, rid, wh, est))
    return out


def _row(draw: st.DrawFn, after: list[prepaid_days.Row]) -> prepaid_days.Row:
    """A row usually the next day's (or the next month's first), sometimes anything."""
    last = date.fromisoformat(after[-1][0]) if after else FIRST
    k = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 0, -3, 12, 40]))
    day = (last + timedelta(days=k)).isoformat()
    est = draw(st.integers(0, 5)) == 0
    rid = draw(st.sampled_from([("est:" if est else PREFIX) + day, PREFIX + day, "other:" + day, "x"]))
    return day, rid, draw(st.integers(0, 9_000) if draw(st.integers(0, 9)) else st.integers(0, 70_000)), est


def _kept(rs: list[prepaid_days.Row], row: prepaid_days.Row) -> list[prepaid_days.Row]:
    """The general fold, on rows: the day's row replaced, sorted, closed months dropped."""
    days = tuple(sorted([DayRead(day=d, read_id=r, energy_wh=w, estimated=e) for d, r, w, e in rs
                         if d != row[0]] + [DayRead(day=row[0], read_id=row[1], energy_wh=row[2],
                                                    estimated=row[3])], key=lambda d: d.day))
    return [(d.day, d.read_id, d.energy_wh, d.estimated) for d in kept_days(days)]


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_appended_is_pack_of_the_kept_rows(data: st.DataObject) -> None:
    rs = data.draw(rows())
    row = _row(data.draw, rs)
    packed = prepaid_days.pack(rs)
    made = prepaid_days.appended(packed, row)
    if made is not None:
        assert made == prepaid_days.pack(_kept(rs, row))
        assert prepaid_days.unpack(made) == _kept(rs, row)


MONTHS = ("2024-12", "2025-01", "2025-02", "2025-03", "2025-04", "2025-05")


@settings(max_examples=1000, deadline=None)
@given(rows().filter(bool), st.sampled_from(MONTHS))
def test_the_header_says_what_the_rows_say(rs: list[prepaid_days.Row], month: str) -> None:
    v = prepaid_days.parsed(prepaid_days.pack(rs))
    assert v.day(v.newest()) == rs[-1][0]
    assert prepaid_days.month_name(v.newest_month()) == rs[-1][0][:7]
    mine = [r for r in rs if r[0].startswith(month)]
    assert v.month_totals(month) == (sum(r[2] for r in mine), len(mine))
    odd = [r[1] for r in prepaid_days.unpack(v.data) if r[1] != ("est:" if r[3] else v.prefix) + r[0]]
    for rid in {r[1] for r in rs} | {"nobody", PREFIX + "2025-02-01"}:
        assert v.has_odd_id(rid) == (rid in odd)


def _state(rs: list[prepaid_days.Row]) -> PrepaidState:
    days = kept_days(tuple(DayRead(day=d, read_id=r, energy_wh=w, estimated=e) for d, r, w, e in rs))
    other = PrepaidState(funded_paise=50_000, emergency_outstanding_paise=7, emergency_period="2025-01",
                         notified=("used_75pc",), mode_request_id="BM1")  # kept as they are by a read
    return with_days(other, days)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_the_usual_read_debits_and_keeps_what_the_general_path_does(data: st.DataObject) -> None:
    p = _state(data.draw(rows()))
    day, rid, wh, _ = _row(data.draw, [(d.day, d.read_id, d.energy_wh, d.estimated) for d in p.days])
    m = Sim().register(at(2025, 1, 1, 10)).prepaid(at(2025, 1, 1, 10), 50_000).m
    m = replace(m, prepaid=p)
    usual = next_day_debit(p, rid, day, wh, POLICY)
    kept = _kept([(d.day, d.read_id, d.energy_wh, d.estimated) for d in p.days],
                 (day, rid, wh, False))
    after = with_read(p, day, rid, wh, False)
    assert after.reads == prepaid_days.pack(kept)
    assert replace(after, reads=p.reads) == p  # nothing else changed
    if usual is not None:
        debit, daily = usual
        assert (debit,) == apply_read(account_of(m), rid, day, wh, POLICY)[1]
        assert daily == daily_charge_paise(after.days, POLICY)
    nothing = apply_read(account_of(m), rid, day, wh, POLICY)[1] == ()
    in_window = bool(p.reads) and prepaid_days.parsed(p.reads).bit(day) is not None
    assert already_read(p, rid, day) == (nothing and in_window)  # exact for a day it can look up
    for d in p.days:  # each row's read again, and its id on that day: nothing to debit, known as such
        assert already_read(p, d.read_id, d.day)
        assert already_read(p, d.read_id, day) == in_window
    assert oldest_open_month_of(p) == oldest_open_month(p.days)
    assert daily_charge_of(p, POLICY) == daily_charge_paise(p.days, POLICY)


def test_the_next_days_read_and_a_months_first_take_the_fast_path() -> None:
    march = [(f"2025-03-{d:02d}", f"{PREFIX}2025-03-{d:02d}", 4_000 + d, False) for d in range(1, 32)]
    april = [(f"2025-04-{d:02d}", f"{PREFIX}2025-04-{d:02d}", 5_000 + d, d == 3) for d in range(1, 31)]
    april[2] = ("2025-04-03", "est:2025-04-03", 5_003, True)
    p = _state(march + april[:-1])
    for day, wh in (("2025-04-30", 4_321), ("2025-05-01", 65_535)):
        base = march + april if day == "2025-05-01" else march + april[:-1]
        q = p if day == "2025-04-30" else _state(base)
        assert next_day_debit(q, PREFIX + day, day, wh, POLICY) is not None
        assert prepaid_days.appended(q.reads, (day, PREFIX + day, wh, False)) == prepaid_days.pack(
            _kept(base, (day, PREFIX + day, wh, False)))
    # an estimate after the newest day, in place; the read after a gap is the general path's
    assert prepaid_days.appended(p.reads, ("2025-04-30", "est:2025-04-30", 1, True)) is not None
    assert next_day_debit(p, PREFIX + "2025-05-02", "2025-05-02", 1, POLICY) is None
    assert next_day_debit(p, PREFIX + "2025-04-29", "2025-04-29", 1, POLICY) is None  # a duplicate
