"""The meter core's contract: deterministic, pure, folds, records fit the codec and Thespian."""

from __future__ import annotations

import copy
import dataclasses
import enum
import types
import typing

import pytest
from test_meter_support import ACCOUNT, POLICY, Sim, at, of_type, overdue_meter

import domain
from domain.commands import CheckMeter, PostBill, RegisterMeter, ReportRelayResult, UpdateMeter
from domain.effects import MeterCommandRejected, SendRelayCommand
from domain.enums import RelayAction, RelayResultStatus, RelayState, RelayTarget
from domain.errors import MeterInvariantError
from domain.events import BillPosted, MeterUpdated, PaymentApplied
from domain.evolve import _with, evolve
from domain.meter import apply_all, decide, next_check_at
from domain.state import MeterCase, PendingRelayCommand, meter_profile


def test_decide_is_deterministic_including_ids() -> None:
    a, b = overdue_meter().wake(), overdue_meter().wake()
    assert a.journal == b.journal
    assert a.last_effects == b.last_effects
    assert a.sent()[0].command_id == f"{ACCOUNT}:c2"


def test_decide_does_not_change_its_input_state() -> None:
    sim = overdue_meter()
    before = copy.deepcopy(sim.m)
    decide(sim.m, CheckMeter(account=ACCOUNT), at(2025, 3, 27, 9), POLICY)
    assert sim.m == before


def test_the_journal_folds_back_to_the_state() -> None:
    sim = overdue_meter().wake()
    sim.disconnected_ok(sim.now + 5).pay(sim.now + 60, sim.m.dues_paise).connected_ok(sim.now + 70)
    assert apply_all(None, sim.journal) == sim.m


def test_check_for_an_unknown_meter_does_nothing() -> None:
    assert decide(None, CheckMeter(account="N0"), 1, POLICY) == ((), ())
    result = ReportRelayResult(account="N0", command_id="x", status=RelayResultStatus.PROCESSED)
    assert decide(None, result, 1, POLICY) == ((), ())


def test_bill_for_an_unknown_meter_is_rejected_not_dropped() -> None:
    bill = PostBill(account="N0", bill_id="B9", amount_paise=1, due_date="2025-01-01", issued_at=1)
    events, effects = decide(None, bill, 1, POLICY)
    assert events == ()
    assert effects == (
        MeterCommandRejected(account="N0", command="PostBill", ref="B9", reason="no such meter"),
    )


def test_registering_twice_the_same_is_ignored_and_differently_is_rejected() -> None:
    sim = Sim().register(at(2025, 3, 1))
    sim.register(at(2025, 3, 2))
    assert sim.last_events == () and sim.last_effects == ()
    sim.register(at(2025, 3, 2), serial="OTHER")
    assert sim.last_events == () and isinstance(sim.last_effects[0], MeterCommandRejected)


def test_update_meter_can_make_a_waiting_meter_eligible() -> None:
    sim = Sim().register(at(2025, 3, 1), install_year=2018, relay=RelayState.DISCONNECTED)
    sim.pay(at(2025, 3, 1, 1), 1)  # dues <= 0: the meter must come back
    assert sim.m.work_order is not None
    sim.send(UpdateMeter(account=ACCOUNT, install_year=2021), at(2025, 3, 1, 2))
    assert of_type(sim.last_events, MeterUpdated)[0].install_year == 2021
    # The field work order is still open, so no command is doubled up on it.
    assert sim.sent() == []
    sim.send(UpdateMeter(account=ACCOUNT, install_year=2021), at(2025, 3, 1, 3))
    assert sim.last_events == ()


def test_next_check_at_is_none_for_a_quiet_meter_and_never_in_the_past_after_a_decide() -> None:
    sim = Sim().register(at(2025, 3, 1))
    assert next_check_at(sim.m, POLICY) is None
    sim = overdue_meter()
    for now in (at(2025, 3, 20), at(2025, 3, 27, 7), at(2025, 3, 27, 19), at(2025, 3, 29, 12)):
        sim.check(now)
        wake = next_check_at(sim.m, POLICY)
        assert wake is None or wake > now


def test_meter_invariants_reject_a_moving_relay_without_a_pending_command() -> None:
    m = Sim().register(at(2025, 3, 1)).m
    with pytest.raises(MeterInvariantError):
        dataclasses.replace(m, relay=RelayState.CONNECTING)
    with pytest.raises(MeterInvariantError):
        _with(m, relay=RelayState.DISCONNECTING)
    pending = PendingRelayCommand(
        command_id="c",
        action=RelayAction.CONNECT,
        attempt=1,
        issued_at=0,
        expires_at=9,
        from_relay=RelayState.DISCONNECTED,
        reason="r",
        correlation_id="p",
        origin=domain.enums.CommandOrigin.AUTOMATIC,
    )
    with pytest.raises(MeterInvariantError):
        dataclasses.replace(m, case=MeterCase(pending=pending))  # pending connect, relay connected


def test_evolve_refuses_events_that_cannot_apply() -> None:
    payment = PaymentApplied(
        account=ACCOUNT,
        at=1,
        payment_id="P",
        amount_paise=1,
        channel="upi",
        cashless=True,
        paid_at=1,
        dues_after_paise=0,
    )
    with pytest.raises(MeterInvariantError):
        evolve(None, payment)
    other = Sim().register(at(2025, 3, 1), account="N999").m
    with pytest.raises(MeterInvariantError):
        evolve(other, payment)


def test_fast_copy_is_the_same_as_dataclasses_replace() -> None:
    m = overdue_meter().m
    changes = {"dues_paise": -5, "recent_payment_ids": ("a", "b"), "desired": RelayTarget.OFF_FOR_DUES}
    assert _with(m, **changes) == dataclasses.replace(m, **changes)  # type: ignore[arg-type]
    assert _with(m) == m and _with(m) is not m


def test_a_quiet_meter_carries_no_case_and_a_protected_one_shares_it() -> None:
    assert Sim().register(at(2025, 3, 1)).m.case is None
    a = Sim().register(at(2025, 3, 1), account="A1", protected=True).m
    b = Sim().register(at(2025, 3, 1), account="A2", protected=True).m
    assert a.case is b.case and a.protected
    sim = overdue_meter().wake()
    sim.disconnected_ok(sim.now + 5).pay(sim.now + 60, sim.m.dues_paise).connected_ok(sim.now + 70)
    assert sim.m.case is None  # notice withdrawn, command done: back to quiet


def test_meters_share_one_interned_profile() -> None:
    a = Sim().register(at(2025, 3, 1), account="A1").m
    b = Sim().register(at(2025, 3, 1), account="A2").m
    assert a.profile is b.profile is meter_profile("hes-a", 2022, True, 2)


# ------------------------------------------------------------------ record shapes (codec, Thespian)

_ALLOWED_LEAVES = (int, str, bool, bytes, type(None))  # bytes: PrepaidState.reads (the codec takes bytes)


def _field_type_ok(hint: object) -> bool:
    origin = typing.get_origin(hint)
    if hint in _ALLOWED_LEAVES:
        return True
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return issubclass(hint, enum.StrEnum | enum.IntEnum)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint in domain.MESSAGE_TYPES
    if origin is tuple:
        args = typing.get_args(hint)
        return len(args) == 2 and args[1] is Ellipsis and _field_type_ok(args[0])
    if origin in (typing.Union, types.UnionType):
        return all(_field_type_ok(a) for a in typing.get_args(hint))
    return False


@pytest.mark.parametrize("cls", domain.MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_every_record_is_frozen_slotted_keyword_only_and_codec_friendly(cls: type) -> None:
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    assert "__slots__" in cls.__dict__
    hints = typing.get_type_hints(cls)
    seen_default = False
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        assert f.kw_only, f"{cls.__name__}.{f.name} is positional"
        assert _field_type_ok(hints[f.name]), f"{cls.__name__}.{f.name}: {hints[f.name]}"
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert not (seen_default and not has_default), f"{cls.__name__}.{f.name}: required after optional"
        seen_default = seen_default or has_default


def test_record_class_names_are_unique_and_not_generic() -> None:
    names = [cls.__name__ for cls in domain.MESSAGE_TYPES]
    assert len(names) == len(set(names))
    assert not {"Credited", "Tick", "Result", "Command", "Event", "Effect"} & set(names)


def test_events_carry_the_account_and_when() -> None:
    for cls in domain.MESSAGE_TYPES:
        if cls.__module__ == "domain.events":
            names = [f.name for f in dataclasses.fields(cls)]
            assert names[:2] == ["account", "at"], cls.__name__


def test_command_fields_are_checked_at_construction() -> None:
    with pytest.raises(ValueError):
        PostBill(account="A", bill_id="B", amount_paise=1, due_date="10/03/2025", issued_at=1)
    with pytest.raises(ValueError):
        RegisterMeter(
            account="A", serial="S", head_end="h", install_year=2020, relay_capable=True, control_mode=7
        )
    with pytest.raises(ValueError):
        RegisterMeter(
            account="A",
            serial="S",
            head_end="h",
            install_year=2020,
            relay_capable=True,
            control_mode=2,
            relay=RelayState.CONNECTING,
        )


def test_a_bill_event_records_the_overdue_instant_for_replay() -> None:
    sim = Sim().register(at(2025, 3, 1)).bill(at(2025, 3, 1), 1, "2025-12-31")
    assert of_type(sim.last_events, BillPosted)[0].due_at == at(2026, 1, 1)


def test_relay_command_effect_names_the_meter_and_head_end() -> None:
    sim = overdue_meter().wake()
    (send,) = of_type(sim.last_effects, SendRelayCommand)
    assert (send.meter_serial, send.head_end, send.account) == ("SM-0001", "hes-a", ACCOUNT)
