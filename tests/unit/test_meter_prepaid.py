"""Prepaid meters in the meter core (issue 16): the billing mode, reads debited exactly once, the notices,
the cut at zero held through friendly windows, emergency credit, and the recharge that reconnects.

The 2025 calendar of test_meter_support: 1 March 2025 is a Saturday, 2 March a Sunday (a day off), the
allowed hours 08:00-18:00 on working days."""

from __future__ import annotations

import dataclasses

from domain.commands import ClearPayment, PostBill, SetBillingMode
from domain.effects import MeterCommandRejected, NotifyConsumer
from domain.enums import BillingMode, NoticeTemplate, RelayAction, RelayState, RelayTarget
from domain.events import (
    BillingModeSet,
    ConsumptionDebited,
    DisconnectionDeferred,
    EmergencyCreditGranted,
    EmergencyCreditRecovered,
    LowBalanceNotified,
    PaymentReconnect,
    ReconnectionChargeApplied,
)
from domain.fused import expand_all
from domain.meter import handle, next_check_at
from domain.payment_path import handle_batched
from domain.prepaid import kept_days, month_charge_paise
from domain.shard import meter_status
from domain.state import DayRead
from domain.windows import disconnection_allowed
from protocols import codec
from protocols.registry import METER_FLAT
from tests.unit.test_meter_support import ACCOUNT, POLICY, Sim, at, of_type

MON = at(2025, 3, 3, 10)  # Monday 10:00, allowed


def prepaid(balance: int = 10_000, now: int = MON) -> Sim:
    return Sim().register(now).prepaid(now, balance)


def rejected(s: Sim) -> list[str]:
    return [e.reason for e in of_type(s.last_effects, MeterCommandRejected)]


def test_switching_to_prepaid_sets_the_balance_once_per_request() -> None:
    s = prepaid(12_345)
    assert s.m.prepaid is not None and -s.m.dues_paise == 12_345
    assert of_type(s.last_events, BillingModeSet)[0].balance_paise == 12_345
    s.prepaid(MON + 60, 99_999)  # the same request again: nothing
    assert s.last_events == () and s.last_effects == () and -s.m.dues_paise == 12_345
    s.prepaid(MON + 60, 99_999, request_id="BM2")  # another request would reset the balance: refused
    assert s.last_events == () and "already prepaid" in rejected(s)[0]


def test_back_to_postpaid_keeps_the_money_as_dues_and_lifts_a_prepaid_cut() -> None:
    s = prepaid(-5_000)  # arrears carried in: at zero or below, so cut at once (Monday 10:00)
    assert s.m.desired is RelayTarget.OFF_FOR_DUES
    s.disconnected_ok(MON + 5)
    s.send(SetBillingMode(account=ACCOUNT, mode=BillingMode.POSTPAID, request_id="BM9"), MON + 60)
    after = s.m
    assert after.prepaid is None and after.dues_paise == 5_000 and after.desired is RelayTarget.CONNECTED
    assert s.sent(RelayAction.CONNECT)  # no s.56 notice was served: the postpaid rules reconnect


def test_reads_are_debited_once_in_any_order_and_a_gap_is_trued_up() -> None:
    s = prepaid(100_000)
    s.consume(MON, "2025-03-01", 5_000)
    s.consume(MON + 1, "2025-03-01", 5_000)  # the same read again
    assert s.last_events == ()
    s.consume(MON + 2, "2025-03-01", 7_000, read_id="other-id")  # a second read of the day: the first stands
    assert s.last_events == ()
    s.consume(MON + 3, "2025-03-03", 6_000)  # 2 March missing: estimated first
    debits = of_type(s.last_events, ConsumptionDebited)
    assert [(d.read_date, d.estimated) for d in debits] == [("2025-03-02", True), ("2025-03-03", False)]
    assert debits[0].energy_wh == 5_000 and debits[-1].balance_after_paise == -s.m.dues_paise
    s.consume(MON + 4, "2025-03-02", 9_000)  # the real read trues the estimate up
    (trued,) = of_type(s.last_events, ConsumptionDebited)
    assert trued.replaces == "est:2025-03-02" and not trued.estimated
    days = [DayRead(day=f"2025-03-0{i}", read_id=str(i), energy_wh=wh)
            for i, wh in ((1, 5_000), (2, 9_000), (3, 6_000))]
    assert -s.m.dues_paise == 100_000 - month_charge_paise(days, "2025-03", POLICY)
    for d in of_type(s.journal, ConsumptionDebited):
        assert d.energy_paise + d.fixed_paise + d.duty_paise == d.debit_paise


def test_bad_reads_are_refused_naming_why() -> None:
    s = prepaid(100_000)
    s.consume(MON, "2025-03-04", 1_000)
    assert "after today" in rejected(s)[0] and s.last_events == ()
    s.consume(MON, "2025-03-01", 1_000).consume(at(2025, 5, 2, 10), "2025-05-01", 1_000)
    s.consume(at(2025, 5, 2, 11), "2025-03-02", 1_000)
    assert "closed" in rejected(s)[0]
    from domain.commands import ReportConsumption
    s.send(ReportConsumption(account=ACCOUNT, read_id="i1", read_date="2025-05-01", energy_wh=1,
                             interval_start=at(2025, 5, 1, 0), interval_end=at(2025, 5, 1, 1)))
    assert "interval" in rejected(s)[0]
    assert {d.day[:7] for d in s.m.prepaid.days} <= {"2025-04", "2025-05"}  # type: ignore[union-attr]


def test_a_postpaid_meter_ignores_reads_and_refuses_emergency_credit() -> None:
    s = Sim().register(MON)
    s.consume(MON, "2025-03-02", 5_000)
    assert s.last_events == () and s.last_effects == ()
    s.emergency(MON)
    assert rejected(s) == ["not a prepaid meter"]


def test_a_prepaid_meter_takes_no_bill() -> None:
    s = prepaid()
    s.send(PostBill(account=ACCOUNT, bill_id="B7", amount_paise=1, due_date="2025-03-10", issued_at=MON))
    assert "prepaid meter" in rejected(s)[0] and s.last_events == ()


def test_low_balance_notices_go_out_once_per_top_up() -> None:
    s = prepaid(20_000)
    thresholds: list[str] = []
    for day in range(1, 4):
        s.consume(MON + day, f"2025-03-0{day}", 12_000)
        thresholds += [e.threshold for e in of_type(s.last_events, LowBalanceNotified)]
    assert thresholds.count("used_75pc") == 1 and thresholds.count("days_left_3") == 1
    assert all(n.template is NoticeTemplate.LOW_BALANCE for n in of_type(s.effects_seen, NotifyConsumer)
               if n.ref in ("used_75pc", "days_left_3"))
    s.pay(MON + 100, 1_000, "P-small")  # a top-up: the notices may go out again
    assert s.m.prepaid is not None and s.m.prepaid.notified == ()


def test_at_zero_the_consumer_is_told_first_and_the_cut_waits_for_the_window_to_end() -> None:
    sat_evening = at(2025, 3, 1, 19)  # Saturday 19:00: night, then Sunday is a day off
    s = Sim().register(sat_evening).prepaid(sat_evening, 1_000)
    s.consume(sat_evening + 60, "2025-03-01", 20_000)
    types = [type(e) for e in s.last_events]
    assert types == [ConsumptionDebited, LowBalanceNotified, DisconnectionDeferred]
    assert of_type(s.last_effects, NotifyConsumer)[-1].ref == "zero" and not s.sent()
    wake = next_check_at(s.m, POLICY)
    assert wake == at(2025, 3, 3, 8)  # Monday 08:00: the first allowed instant
    s.check(at(2025, 3, 2, 12))  # Sunday noon: still held, nothing new
    assert not s.sent() and s.last_events == ()
    s.wake()
    assert [c.action for c in s.sent()] == [RelayAction.DISCONNECT] and disconnection_allowed(s.now, POLICY)
    assert of_type(s.journal, LowBalanceNotified)[-1].threshold == "zero"  # told before the cut
    s.disconnected_ok(s.now + 5)
    assert not of_type(s.journal, ReconnectionChargeApplied)  # none for a prepaid cut at zero
    assert s.m.dues_paise == -(1_000 - of_type(s.journal, ConsumptionDebited)[0].debit_paise)


def test_a_protected_prepaid_meter_is_never_cut() -> None:
    s = Sim().register(MON, protected=True).prepaid(MON, -1)
    assert s.m.desired is RelayTarget.CONNECTED and not s.sent()


def test_emergency_credit_once_a_month_none_outstanding_repaid_first_by_a_recharge() -> None:
    s = prepaid(-2_000)
    s.disconnected_ok(MON + 5)
    s.emergency(MON + 60)
    (granted,) = of_type(s.last_events, EmergencyCreditGranted)
    assert granted.amount_paise == POLICY.prepaid_emergency_credit_paise and granted.period == "2025-03"
    assert s.sent(RelayAction.CONNECT)  # the balance is above zero again
    s.emergency(MON + 61)  # the same request: nothing
    assert s.last_events == () and s.last_effects == ()
    s.emergency(MON + 62, "EC2")
    assert "outstanding" in rejected(s)[0]
    s.connected_ok(MON + 70)
    s.pay(MON + 100, 5_000, "R1")
    (rec,) = of_type(s.last_events, EmergencyCreditRecovered)
    assert rec.amount_paise == 5_000 and s.m.prepaid.emergency_outstanding_paise == 15_000  # type: ignore[union-attr]
    balance = -s.m.dues_paise
    s.pay(MON + 101, 5_000, "R1")  # redelivered: nothing twice
    assert of_type(s.last_events, EmergencyCreditRecovered) == [] and -s.m.dues_paise == balance
    s.pay(MON + 102, 100_000, "R2")
    assert of_type(s.last_events, EmergencyCreditRecovered)[0].amount_paise == 15_000
    assert -s.m.dues_paise == balance + 100_000 - 15_000
    s.emergency(MON + 200, "EC3")
    assert "already granted in 2025-03" in rejected(s)[0]
    s.emergency(at(2025, 4, 1, 10), "EC4")
    assert of_type(s.last_events, EmergencyCreditGranted)


def test_a_recharge_that_brings_the_balance_above_zero_reconnects_in_one_fused_record() -> None:
    s = prepaid(-3_000)
    s.disconnected_ok(MON + 5)
    pay = ClearPayment(account=ACCOUNT, payment_id="R9", amount_paise=3_001, channel="upi", cashless=True,
                       paid_at=at(2025, 3, 3, 23))
    now = at(2025, 3, 3, 23)  # at night: reconnection is at any hour
    fast = handle_batched(s.m, pay, now, POLICY)
    slow = handle(s.m, pay, now, POLICY)
    assert [type(e) for e in fast[1]] == [PaymentReconnect]
    assert expand_all(fast[1]) == list(slow[1]) and fast[0] == slow[0] and fast[2] == slow[2]
    assert fast[0] is not None and fast[0].relay is RelayState.CONNECTING and fast[0].prepaid is not None
    exact = dataclasses.replace(pay, amount_paise=3_000, payment_id="R10")  # balance exactly 0: stays off
    new, events, _ = handle_batched(s.m, exact, now, POLICY)
    assert new is not None and new.relay is RelayState.DISCONNECTED and not any(
        type(e) is PaymentReconnect for e in events)
    assert meter_status(new, POLICY) == (RelayState.DISCONNECTED, False)  # not "paid but off"
    assert slow[0] is not None and meter_status(slow[0], POLICY) == (RelayState.CONNECTING, True)


def test_a_packed_meter_written_before_prepaid_loads_as_postpaid() -> None:
    # METER_FLAT.pack of a registered, billed meter by main at 3e61e5b (before the prepaid field)
    old = bytes.fromhex("99a2533194a56865732d61cd07e6c302a9636f6e6e6563746564a9636f6e6e6563746564ce0001e2409"
                        "6a24231ce0001e240ce6b1aefa8c2c2c0c00090")
    m = METER_FLAT.unpack("N1", old)
    assert m.prepaid is None and m.dues_paise == 123_456 and m.bill is not None
    assert METER_FLAT.unpack("N1", METER_FLAT.pack(m)) == m
    s = prepaid()
    assert METER_FLAT.unpack(ACCOUNT, METER_FLAT.pack(s.m)) == s.m
    assert codec.decode(codec.encode(s.m), trusted=True) == s.m


def test_kept_days_drop_closed_months() -> None:
    days = tuple(DayRead(day=d, read_id=d, energy_wh=1) for d in ("2025-01-31", "2025-02-01", "2025-03-01"))
    assert [d.day for d in kept_days(days)] == ["2025-02-01", "2025-03-01"]


def test_a_host_step_tallies_read_outcomes_and_keeps_the_balance_bands() -> None:
    from domain.commands import RegisterMeter, ReportConsumption, RequestEmergencyCredit
    from domain.prepaid_rules import tally
    from domain.shard import MeterHost

    host = MeterHost(POLICY)
    reg = RegisterMeter(account=ACCOUNT, serial="S1", head_end="h", install_year=2022, relay_capable=True,
                        control_mode=2)
    first = host.step([reg, SetBillingMode(account=ACCOUNT, mode=BillingMode.PREPAID,
                                           opening_balance_paise=60_000, request_id="m")], MON)
    host.assign(first, MON)
    assert host.prepaid_bands == {"500_plus": 1}

    def read(rid: str, day: str, wh: int) -> ReportConsumption:
        return ReportConsumption(account=ACCOUNT, read_id=rid, read_date=day, energy_wh=wh)

    step = host.step([read("a", "2025-03-01", 9_000), read("a", "2025-03-01", 9_000),
                      read("c", "2025-03-03", 9_000), read("b", "2025-03-02", 9_000),
                      read("z", "2025-03-09", 1), RequestEmergencyCredit(account=ACCOUNT, request_id="e")],
                     MON + 60)
    counts = tally(step.events, step.states, step.refused + step.failures, step.duplicate_reads)
    assert counts == {("prepaid_reads", "debited"): 2, ("prepaid_reads", "estimated"): 1,
                      ("prepaid_reads", "trued_up"): 1, ("prepaid_reads", "duplicate"): 1,
                      ("prepaid_reads", "rejected"): 1, ("emergency_credit", "granted"): 1}
    host.assign(step, MON + 60)
    m = host.get(ACCOUNT)
    assert m is not None and -m.dues_paise >= 50_000 and host.prepaid_bands == {"500_plus": 1}
    later = host.step([read("d", "2025-03-03", 0), read("f", "2025-03-03", 0)], MON + 61)  # no: same day
    assert later.duplicate_reads == 2
    drain = host.step([read(f"x{i}", f"2025-03-0{i}", 60_000) for i in (4, 5)], at(2025, 3, 5, 10))
    host.assign(drain, at(2025, 3, 5, 10))
    m = host.get(ACCOUNT)
    assert m is not None and host.prepaid_bands == {"500_plus": 0, _band(-m.dues_paise): 1}


def _band(balance: int) -> str:
    from domain.prepaid import balance_band
    return balance_band(balance)


#: METER_FLAT.pack by main at 658650c (the days kept as records) of ACCOUNT, prepaid with 1 000 rupees,
#: after reads S1:2025-03-01, S1:2025-03-03 (2 March estimated) and odd-feb for 28 February.
_PREPAID_658650C = (
    "9aa7534d2d3030303194a56865732d61cd07e6c302a9636f6e6e6563746564a9636f6e6e6563746564d2fffea3f4c0c0009097"
    "ce000186a09494aa323032352d30322d3238a76f64642d666562cd0fa0c294aa323032352d30332d3031ad53313a323032352d"
    "30332d3031cd1388c294aa323032352d30332d3032ae6573743a323032352d30332d3032cd1388c394aa323032352d30332d30"
    "33ad53313a323032352d30332d3033cd1770c200c0c0a3424d3190"
)


def test_a_packed_prepaid_meter_written_at_658650c_loads_and_reads_on() -> None:
    old = METER_FLAT.unpack(ACCOUNT, bytes.fromhex(_PREPAID_658650C))
    p = old.prepaid
    assert p is not None and -old.dues_paise == 89_100 and p.mode_request_id == "BM1"
    assert [(d.day, d.read_id, d.energy_wh, d.estimated) for d in p.days] == [
        ("2025-02-28", "odd-feb", 4_000, False), ("2025-03-01", "S1:2025-03-01", 5_000, False),
        ("2025-03-02", "est:2025-03-02", 5_000, True), ("2025-03-03", "S1:2025-03-03", 6_000, False)]
    s = Sim(state=old, now=MON + 9)
    s.consume(MON + 10, "2025-03-01", 1, read_id="S1:2025-03-01")  # a read id it had: still a no-op
    assert s.last_events == ()
    s.consume(MON + 11, "2025-03-02", 7_000, read_id="S1:2025-03-02")  # the true-up of its estimate
    (trued,) = of_type(s.last_events, ConsumptionDebited)
    assert trued.replaces == "est:2025-03-02"
    new = s.m.prepaid
    assert new is not None and new.legacy_days == () and new.reads  # written packed from then on
    assert [d.read_id for d in new.days] == ["odd-feb", "S1:2025-03-01", "S1:2025-03-02", "S1:2025-03-03"]
    again = METER_FLAT.unpack(ACCOUNT, METER_FLAT.pack(s.m))
    assert again == s.m and len(METER_FLAT.pack(s.m)) < len(bytes.fromhex(_PREPAID_658650C))


def test_the_days_pack_and_unpack_exactly() -> None:
    from domain import prepaid_days

    rows = [("2025-01-31", "SER9:2025-01-31", 0, False), ("2025-02-01", "est:2025-02-01", 10_000_000, True),
            ("2025-02-02", "odd id \u00e9", 5, False), ("2025-02-03", "est:other", 7, True),
            ("2025-03-31", "SER9:2025-03-31", 127, False), ("2025-04-01", "2025-04-01", 128, False)]
    for n in range(len(rows) + 1):
        for k in range(n):
            part = rows[k:n]
            assert prepaid_days.unpack(prepaid_days.pack(part)) == part
    assert prepaid_days.pack([]) == b""
    month = [(f"2025-03-{d:02d}", f"SR0000000042:2025-03-{d:02d}", 4_000 + d, False) for d in range(1, 32)]
    assert len(prepaid_days.pack(month)) < 3 * 31  # ~2 B a day and the prefix once
    import pytest

    with pytest.raises(ValueError, match="out of order"):
        prepaid_days.pack([rows[1], rows[0]])


def test_an_automatic_cut_the_engineer_took_over_is_retried_as_the_engineers() -> None:
    # Found by the prepaid machine (also at 658650c): cut at zero balance, then an engineer's disconnection
    # while that command is in flight, then the meter protected once the command has expired: the retry
    # is the engineer's (the meter is wanted off by the engineer), not an automatic cut of a protected meter.
    from domain.effects import SendRelayCommand
    from domain.enums import CommandOrigin, OverrideAction

    s = prepaid(0)
    cut = s.m.pending
    assert s.m.desired is RelayTarget.OFF_FOR_DUES and cut is not None
    s.override(MON, OverrideAction.DISCONNECT)
    wanted: RelayTarget = s.m.desired
    assert wanted is RelayTarget.OFF_BY_ENGINEER and s.m.pending == cut
    s.override(cut.expires_at + 30, OverrideAction.PROTECT)
    sent = of_type(s.last_effects, SendRelayCommand)
    assert s.m.protected and sent and all(c.origin is CommandOrigin.ENGINEER for c in sent)


def test_a_recharge_off_the_kerc_rule_is_credited_in_full_and_flagged() -> None:
    from domain.prepaid import daily_charge_paise
    from domain.prepaid_rules import recharges_off_rule
    from tests.unit.test_meter_support import ACCOUNT

    s = Sim().register(MON).prepaid(MON, 10_000)
    for day in ("2025-02-24", "2025-02-25", "2025-02-26", "2025-02-27", "2025-02-28", "2025-03-01",
                "2025-03-02"):
        s.consume(MON + 60, day, 8_000)  # a week of use: the week's average is the sum of these days' charges
    policy = s.policy
    assert s.m.prepaid is not None
    week = 7 * daily_charge_paise(s.m.prepaid.days, policy)
    assert week > 10_000

    def flagged(amount: int, payment_id: str) -> list[tuple[str, str, str, str]]:
        before = s.m.dues_paise
        s.pay(MON + 120, amount, payment_id)
        assert s.m.dues_paise == before - amount  # credited in full, whatever the rule says
        return recharges_off_rule(list(enumerate(s.last_events)), {ACCOUNT: s.m}, policy)

    odd = flagged(week + 50, "P-odd")  # not a multiple of Rs 100
    assert [(r, a, p) for r, a, p, _ in odd] == [("multiple", ACCOUNT, "P-odd")] and "multiple" in odd[0][3]
    small = flagged(10_000, "P-small")  # Rs 100: a multiple, but below a week's average use
    assert [(r, p) for r, _, p, _ in small] == [("week_average", "P-small")] and str(week) in small[0][3]
    assert flagged((week // 10_000 + 1) * 10_000, "P-ok") == []
    off = dataclasses.replace(policy, prepaid_recharge_rule="off")
    assert recharges_off_rule(list(enumerate(s.journal)), {ACCOUNT: s.m}, off) == []
