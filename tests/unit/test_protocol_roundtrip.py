"""Every record of the meter core round-trips through the codec, validated and trusted.

The records come from real decisions: a set of stories driven through decide/evolve, so what is
checked is what the journal, snapshots and actors actually carry.
"""

from __future__ import annotations

from typing import Any

import pytest

import protocols  # noqa: F401  (registers the meter core)
from domain import MESSAGE_TYPES
from domain.commands import EngineerOverride, UpdateMeter
from domain.enums import ControlState, OverrideAction, RelayResultStatus
from domain.fused import fuse_all
from domain.policy import load_policy
from domain.state import PROTECTED_CASE, Meter, meter_profile
from protocols import codec
from protocols.payments import PaymentItemResult, PaymentReceived, PaymentResultCode
from tests.unit.test_meter_support import ACCOUNT, Sim, at, disconnected_meter, overdue_meter


def stories() -> list[Sim]:
    sims = []
    # overdue → notice → disconnect → confirmed → part and full payment → reconnected
    s = disconnected_meter()
    s.pay(s.now + 60, 5_000, "P-part")
    s.pay(s.now + 60, 500_000, "P-full")
    s.connected_ok(s.now + 5)
    sims.append(s)
    # control mode 1: ready_for_reconnection, then the button seen in a read
    s = disconnected_meter(control_mode=1)
    s.pay(s.now + 60, 500_000)
    s.result(s.now + 5, control_state=ControlState.READY_FOR_RECONNECTION, output_state=False)
    s.read(s.now + 600, ControlState.CONNECTED, True)
    sims.append(s)
    # failures with retries, then a field work order; expiry; rejection
    s = disconnected_meter()
    s.pay(s.now + 60, 500_000)
    for _ in range(4):
        if s.m.pending is None:
            break
        if s.m.pending.retry_at is not None:
            s.wake()
        s.result(s.now + 1, RelayResultStatus.FAILED, error_code="no_communication", retryable=True)
    sims.append(s)
    s = overdue_meter().wake()
    s.result(s.now + 1, RelayResultStatus.EXPIRED)
    s.result(s.now + 1, RelayResultStatus.REJECTED, error_code="unknown_meter") if s.m.pending else None
    sims.append(s)
    # not remotely switchable: work orders, cancelled by a payment
    s = overdue_meter(install_year=2017).wake()
    s.pay(s.now + 60, 500_000)
    sims.append(s)
    # engineers and attribute updates
    s = Sim().register(at(2025, 3, 1, 10))
    for action in OverrideAction:
        s.override(s.now + 60, action)
    s.send(UpdateMeter(account=ACCOUNT, control_mode=4, serial="SM-0002"), s.now + 60)
    s.send(EngineerOverride(account=ACCOUNT, action=OverrideAction.PROTECT, engineer_id="E1",
                            reason="life support", request_id="R-1"), s.now + 60)
    sims.append(s)
    # a notice maturing at night is deferred past the window
    s = overdue_meter()
    s.check(at(2025, 3, 27, 19))  # first look after maturity falls in the night window
    sims.append(s)
    # cashless payment by the due date earns the rebate
    s = Sim().register(at(2025, 3, 1, 10))
    s.bill(at(2025, 3, 1, 10), 100_000, "2025-03-10")
    s.pay(at(2025, 3, 5, 10), 100_000)
    sims.append(s)
    # prepaid: reads with a gap (estimated, trued up), low-balance notices, held then cut, emergency
    # credit, a recharge that repays it and reconnects
    s = Sim().register(at(2025, 3, 1, 10)).prepaid(at(2025, 3, 1, 10), 12_000)
    s.consume(at(2025, 3, 2, 10), "2025-03-01", 6_000).consume(at(2025, 3, 4, 10), "2025-03-03", 6_000)
    s.consume(at(2025, 3, 4, 11), "2025-03-02", 9_000).consume(at(2025, 3, 5, 20), "2025-03-04", 9_000)
    s.wake().disconnected_ok(s.now + 5).emergency(s.now + 60).connected_ok(s.now + 5)
    s.pay(s.now + 600, 50_000, "P-recharge")
    sims.append(s)
    # a prepaid meter that keeps its own credit: its balance sent, applied, a recharge's sent again, failed
    s = Sim(policy=load_policy('[prepaid]\nmeter_credit_head_ends = ["*"]\n'))
    s.register(at(2025, 3, 1, 10)).prepaid(at(2025, 3, 1, 10), 12_000)
    s.result(s.now + 1, command_id=s.m.prepaid.credit.command_id)  # type: ignore[union-attr]
    s.pay(s.now + 60, 50_000, "P-credit")
    s.result(s.now + 1, RelayResultStatus.FAILED, command_id=s.m.prepaid.credit.command_id,  # type: ignore[union-attr]
             error_code="no_communication", retryable=True)
    sims.append(s)
    # a bill for a meter that is not registered is refused, not dropped
    s = Sim()
    s.bill(at(2025, 3, 1, 10), 100_000, "2025-03-10")
    sims.append(s)
    return sims


def nested(record: Any) -> list[Any]:
    """The record and every registered record inside it."""
    out = [record]
    for name in getattr(record, "__dataclass_fields__", {}):
        value = getattr(record, name)
        for item in value if isinstance(value, tuple) else (value,):
            if hasattr(item, "__dataclass_fields__"):
                out += nested(item)
    return out


def collected() -> list[Any]:
    found: list[Any] = []
    for sim in stories():
        found += sim.journal
        found += [e for e in fuse_all(sim.journal) if e not in sim.journal]  # as a shard journals them
        found += sim.effects_seen
        found += sim.commands_seen
        found += [n for m in sim.states_seen for n in nested(m)]
    found += [
        meter_profile("hes-a", 2022, True, 2),
        PaymentReceived(payment_id="pay_1", account="N1", amount_paise=1, channel="upi", gateway="g",
                        paid_at=1, received_at=1, event_id="evt_1"),
        PaymentItemResult(index=0, payment_id="pay_1", code=PaymentResultCode.DUPLICATE, reason="seen"),
        *_prepaid_samples(),
    ]
    return found


def _prepaid_samples() -> list[Any]:
    """The prepaid contract's records (issue 16), until the stories drive prepaid meters."""
    from domain.commands import ReportConsumption, RequestEmergencyCredit, SetBillingMode
    from domain.enums import BillingMode
    from domain.events import (
        BillingModeSet,
        ConsumptionDebited,
        EmergencyCreditGranted,
        EmergencyCreditRecovered,
        LowBalanceNotified,
    )
    from domain.state import DayRead, PrepaidState

    return [
        SetBillingMode(account="N1", mode=BillingMode.PREPAID, opening_balance_paise=50_000, request_id="r1"),
        ReportConsumption(account="N1", read_id="rd1", read_date="2026-12-01", energy_wh=4_250,
                          register_wh=1_204_250, source="hes-a"),
        RequestEmergencyCredit(account="N1", request_id="ec1"),
        BillingModeSet(account="N1", at=1, mode=BillingMode.PREPAID, balance_paise=50_000, request_id="r1"),
        ConsumptionDebited(account="N1", at=1, read_id="rd1", read_date="2026-12-01", energy_wh=4_250,
                           energy_paise=1_900, fixed_paise=500, duty_paise=228, debit_paise=2_628,
                           balance_after_paise=47_372),
        LowBalanceNotified(account="N1", at=1, threshold="used_75pc", balance_paise=1_000, days_left=3),
        EmergencyCreditGranted(account="N1", at=1, request_id="ec1", amount_paise=20_000, period="2026-12",
                               balance_after_paise=10_000),
        EmergencyCreditRecovered(account="N1", at=1, payment_id="pay_1", amount_paise=20_000,
                                 outstanding_after_paise=0),
        # the days as records, as 658650c kept them (loaded still; jodo now packs them: PrepaidState.reads)
        PrepaidState(legacy_days=(DayRead(day="2026-12-01", read_id="rd1", energy_wh=4_250),)),
        DayRead(day="2026-12-02", read_id="est:2026-12-02", energy_wh=4_250, estimated=True),
    ]


@pytest.fixture(scope="module")
def records() -> list[Any]:
    return collected()


def test_the_stories_cover_every_record_type_of_the_meter_core(records: list[Any]) -> None:
    seen = {type(r) for r in records}
    missing = {cls.__name__ for cls in MESSAGE_TYPES} - {cls.__name__ for cls in seen}
    assert not missing, f"no story produces {sorted(missing)}"


def test_every_record_round_trips_validated(records: list[Any]) -> None:
    for r in records:
        assert codec.decode(codec.encode(r)) == r, type(r).__name__


def test_every_record_round_trips_trusted(records: list[Any]) -> None:
    for r in records:
        assert codec.decode(codec.encode(r), trusted=True) == r, type(r).__name__
    assert codec.decode_many(codec.encode_many(records), trusted=True) == records


def test_decoded_meters_share_interned_profiles_and_cases(records: list[Any]) -> None:
    meters = [r for r in records if isinstance(r, Meter)]
    for trusted in (False, True):
        again = codec.decode_many(codec.encode_many(meters), trusted=trusted)
        for m in again:
            assert m.profile is meter_profile(m.profile.head_end, m.profile.install_year,
                                              m.profile.relay_capable, m.profile.control_mode)
            if m.case == PROTECTED_CASE:
                assert m.case is PROTECTED_CASE
