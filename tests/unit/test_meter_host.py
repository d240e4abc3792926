"""The meter host: many entities, computed then assigned, with one timer index."""

from __future__ import annotations

from domain.commands import ClearPayment, PostBill, RegisterMeter
from domain.effects import AckPayment, SendRelayCommand
from domain.enums import PaymentOutcome, RelayAction, RelayState
from domain.policy import load_policy
from domain.shard import MeterHost
from domain.sharding import logical_shard
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 1, 5, 10)


def register(n: int) -> list[RegisterMeter]:
    return [
        RegisterMeter(
            account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022,
            relay_capable=True, control_mode=2,
        )
        for i in range(n)
    ]


def hosted(n: int) -> MeterHost:
    host = MeterHost(POLICY)
    host.assign(host.step(register(n), T0), T0)
    return host


def test_step_changes_nothing_until_assigned() -> None:
    host = MeterHost(POLICY)
    step = host.step(register(3), T0)
    assert len(host) == 0 and len(step.states) == 3
    host.assign(step, T0)
    assert len(host) == 3 and host.relay_counts[RelayState.CONNECTED] == 3


def test_events_are_tagged_with_the_meters_logical_shard() -> None:
    step = MeterHost(POLICY).step(register(5), T0)
    assert all(shard == logical_shard(e.account) for shard, e in step.events)


def test_commands_for_one_meter_in_a_batch_apply_in_order() -> None:
    host = hosted(1)
    bill = PostBill(account="N0000000000", bill_id="B1", amount_paise=50_000, due_date="2026-01-20",
                    issued_at=T0)
    pay = ClearPayment(account="N0000000000", payment_id="P1", amount_paise=50_000, channel="upi",
                       cashless=True, paid_at=T0)
    step = host.step([bill, pay], T0)
    host.assign(step, T0)
    m = host.get("N0000000000")
    assert m is not None and m.dues_paise <= 0


def test_a_bad_command_is_rejected_alone_and_the_rest_stands() -> None:
    host = hosted(2)
    bad = PostBill.__new__(PostBill)  # bypasses validation: a record that makes decide raise
    object.__setattr__(bad, "account", "N0000000001")
    pay = ClearPayment(account="N0000000000", payment_id="P1", amount_paise=100, channel="upi",
                       cashless=True, paid_at=T0)
    step = host.step([bad, pay], T0)
    assert len(step.failures) == 1 and step.failures[0][0] is bad
    assert AckPayment(payment_id="P1", account="N0000000000", outcome=PaymentOutcome.APPLIED) in step.effects


def test_unknown_account_payment_is_acknowledged_as_unknown() -> None:
    host = hosted(1)
    pay = ClearPayment(account="X1", payment_id="P9", amount_paise=100, channel="upi", cashless=True,
                       paid_at=T0)
    step = host.step([pay], T0)
    unknown = AckPayment(payment_id="P9", account="X1", outcome=PaymentOutcome.UNKNOWN_ACCOUNT)
    assert step.effects == (unknown,)
    assert not step.events


def test_overdue_meters_come_due_once_each_and_disconnect_after_notice() -> None:
    host = hosted(50)
    bills = [
        PostBill(account=f"N{i:010d}", bill_id=f"B{i}", amount_paise=200_000, due_date="2026-01-06",
                 issued_at=T0)
        for i in range(50)
    ]
    host.assign(host.step(bills, T0), T0)
    assert host.next_due() is not None
    now = T0
    sent: list[SendRelayCommand] = []
    for _ in range(400):  # walk the clock from timer to timer, as the shard's tick does
        nxt = host.next_due()
        if nxt is None or nxt > at(2026, 2, 28):
            break
        now = max(now, nxt)
        checks = host.due(now, limit=20)
        assert len({c.account for c in checks}) == len(checks)
        step = host.step(checks, now)
        host.assign(step, now)
        sent += [e for e in step.effects if isinstance(e, SendRelayCommand)]
        if len(sent) >= 50:
            break
    assert {s.account for s in sent} == {f"N{i:010d}" for i in range(50)}
    assert all(s.action is RelayAction.DISCONNECT for s in sent)
    assert host.relay_counts[RelayState.DISCONNECTING] == 50
