"""Prepaid money (domain/prepaid.py): exact in paise over any order of reads and recharges, duplicates
included; gaps estimated and trued up; emergency credit recovered exactly once."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.policy import load_policy
from domain.prepaid import apply_read, grant_emergency, month_charge_paise, open_account, recharge

POLICY = load_policy()
START = date(2026, 11, 20)


def _day(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


reads = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 30_000)), max_size=25,
                 unique_by=lambda t: t[0])
pays = st.lists(st.integers(1, 200_000), max_size=6)


def _expected_charge(days: list[tuple[int, int]]) -> int:
    from domain.prepaid import DayRead
    rows = [DayRead(day=_day(i), read_id=f"r{i}", energy_wh=wh) for i, wh in days]
    return sum(month_charge_paise(rows, m, POLICY) for m in {r.day[:7] for r in rows})


@settings(max_examples=200)
@given(reads, pays, st.randoms(use_true_random=False), st.integers(-50_000, 100_000))
def test_balance_is_exact_over_any_order_with_duplicates(days: list[tuple[int, int]], payments: list[int],
                                                         rnd: object, opening: int) -> None:
    import random
    assert isinstance(rnd, random.Random)
    ops: list[tuple[str, int, int]] = [("read", i, wh) for i, wh in days]
    ops += [("pay", n, amount) for n, amount in enumerate(payments)]
    ops += rnd.sample(ops, k=min(len(ops), 5))  # redeliveries
    rnd.shuffle(ops)
    acct = open_account(opening)
    for kind, key, value in ops:
        if kind == "read":
            acct, _ = apply_read(acct, f"r{key}", _day(key), value, POLICY)
        else:
            acct, _ = recharge(acct, f"p{key}", value, kept=64)
    if days:  # trailing estimates only fill gaps *before* the last real read: every gap day was read
        real = {d.day for d in acct.days if not d.estimated}
        assert real == {_day(i) for i, _ in days}
    # estimates left standing are for days never read; with them the total is the month charge of all
    charged = sum(month_charge_paise(list(acct.days), m, POLICY) for m in {d.day[:7] for d in acct.days})
    assert acct.balance_paise == opening + sum(payments) - charged
    if not any(d.estimated for d in acct.days):
        assert charged == _expected_charge(days)


def test_a_gap_is_estimated_then_trued_up_by_the_real_read() -> None:
    acct = open_account(100_000)
    acct, _ = apply_read(acct, "a", _day(0), 4_000, POLICY)
    acct, debits = apply_read(acct, "c", _day(2), 6_000, POLICY)
    assert [d.estimated for d in debits] == [True, False] and debits[0].energy_wh == 4_000
    before = acct.balance_paise
    acct, debits = apply_read(acct, "b", _day(1), 10_000, POLICY)
    assert debits[0].replaces == f"est:{_day(1)}" and debits[0].debit_paise > 0
    real = [(0, 4_000), (1, 10_000), (2, 6_000)]
    assert acct.balance_paise == 100_000 - _expected_charge(real)
    assert before - acct.balance_paise == debits[0].debit_paise
    again, none = apply_read(acct, "b", _day(1), 10_000, POLICY)
    assert again == acct and none == ()


@given(st.lists(st.one_of(st.tuples(st.just("ec"), st.integers(0, 3)),
                          st.tuples(st.just("pay"), st.integers(1, 50_000))), max_size=20))
def test_emergency_credit_is_recovered_exactly_once(ops: list[tuple[str, int]]) -> None:
    acct = open_account(0)
    granted = recovered = paid = 0
    for n, (kind, value) in enumerate(ops):
        if kind == "ec":
            acct, g = grant_emergency(acct, f"2026-{value + 1:02d}", POLICY)
            granted += g
        else:
            acct, r = recharge(acct, f"p{n}", value, kept=64)
            acct, again = recharge(acct, f"p{n}", value, kept=64)  # redelivered: nothing twice
            assert again == 0
            recovered += r
            paid += value
        assert 0 <= acct.emergency_outstanding_paise == granted - recovered
    assert acct.balance_paise == paid + granted - recovered
