"""evolve(state, event) -> state: the only way a meter's state changes. Total over valid histories,
raises `MeterInvariantError` on an impossible one (a corrupt journal or a bug in decide)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from domain.enums import (
    OverrideAction,
    RelayAction,
    RelayState,
    RelayTarget,
)
from domain.errors import MeterInvariantError
from domain.events import (
    AwaitingButtonPress,
    BillPosted,
    DisconnectionDeferred,
    DisconnectionNoticeIssued,
    DisconnectionNoticeWithdrawn,
    MeterEvent,
    MeterRegistered,
    MeterUpdated,
    OverrideApplied,
    PaymentApplied,
    RebateGranted,
    ReconnectionChargeApplied,
    RelayCommandCancelled,
    RelayCommandFailed,
    RelayCommandIssued,
    RelayCommandRetryScheduled,
    RelayStateConfirmed,
    RelayStateReported,
    RelayTargetSet,
    SurchargeApplied,
    WorkOrderClosed,
    WorkOrderOpened,
)
from domain.state import (
    RECENT_BILL_IDS_KEPT,
    RECENT_PAYMENT_IDS_KEPT,
    BillState,
    FieldWorkOrder,
    Meter,
    MeterProfile,
    PendingRelayCommand,
    meter_profile,
)

if TYPE_CHECKING:
    from typing import Unpack

__all__ = ["apply_all", "evolve"]


class _MeterChanges(TypedDict, total=False):
    serial: str
    profile: MeterProfile
    relay: RelayState
    desired: RelayTarget
    dues_paise: int
    protected: bool
    on_hold: bool
    bill: BillState | None
    notice_at: int | None
    switch_off_not_before: int | None
    pending: PendingRelayCommand | None
    work_order: FieldWorkOrder | None
    seq: int
    recent_payment_ids: tuple[str, ...]


_SLOTS = tuple(
    (f.name, getattr(Meter, f.name).__get__, getattr(Meter, f.name).__set__)
    for f in dataclasses.fields(Meter)
)
_new = object.__new__


def _with(m: Meter, **changes: Unpack[_MeterChanges]) -> Meter:
    """``dataclasses.replace(m, **changes)`` without the generated __init__: it copies the slots
    directly (about 2.4x faster for Meter's 15 fields, measured) and still runs __post_init__, so
    every invariant is checked exactly as on construction."""
    new = _new(Meter)
    values: dict[str, Any] = changes  # type: ignore[assignment]
    for name, get, put in _SLOTS:
        put(new, values[name] if name in values else get(m, Meter))
    new.__post_init__()
    return new


def _registered(e: MeterRegistered) -> Meter:
    return Meter(
        account=e.account,
        serial=e.serial,
        profile=meter_profile(e.head_end, e.install_year, e.relay_capable, e.control_mode),
        relay=e.relay,
        # A meter registered off is off for dues: paying (dues <= threshold) reconnects it.
        desired=RelayTarget.OFF_FOR_DUES if e.relay is RelayState.DISCONNECTED else RelayTarget.CONNECTED,
        dues_paise=e.opening_dues_paise,
        protected=e.protected,
    )


def _updated(m: Meter, e: MeterUpdated) -> Meter:
    profile = meter_profile(e.head_end, e.install_year, e.relay_capable, e.control_mode)
    return _with(m, serial=e.serial, profile=profile)


def _bill_posted(m: Meter, e: BillPosted) -> Meter:
    ids = (*m.bill.bill_ids, e.bill_id)[-RECENT_BILL_IDS_KEPT:] if m.bill else (e.bill_id,)
    bill = BillState(bill_ids=ids, amount_paise=e.amount_paise, due_at=e.due_at)
    return _with(m, dues_paise=m.dues_paise + e.amount_paise, bill=bill)


def _payment_applied(m: Meter, e: PaymentApplied) -> Meter:
    recent = (*m.recent_payment_ids, e.payment_id)[-RECENT_PAYMENT_IDS_KEPT:]
    return _with(m, dues_paise=m.dues_paise - e.amount_paise, recent_payment_ids=recent)


def _bill(m: Meter, bill_id: str) -> BillState:
    if m.bill is None or m.bill.bill_id != bill_id:
        raise MeterInvariantError(f"{m.account}: event for bill {bill_id}, which is not current")
    return m.bill


def _rebate(m: Meter, e: RebateGranted) -> Meter:
    bill = dataclasses.replace(_bill(m, e.bill_id), rebated=True)
    return _with(m, dues_paise=m.dues_paise - e.amount_paise, bill=bill)


def _surcharge(m: Meter, e: SurchargeApplied) -> Meter:
    bill = dataclasses.replace(_bill(m, e.bill_id), surcharged=True)
    return _with(m, dues_paise=m.dues_paise + e.amount_paise, bill=bill)


def _notice_issued(m: Meter, e: DisconnectionNoticeIssued) -> Meter:
    return _with(m, notice_at=e.at, switch_off_not_before=e.not_before, seq=m.seq + 1)


def _notice_withdrawn(m: Meter, e: DisconnectionNoticeWithdrawn) -> Meter:
    return _with(m, notice_at=None, switch_off_not_before=None)


def _deferred(m: Meter, e: DisconnectionDeferred) -> Meter:
    return _with(m, switch_off_not_before=e.not_before)


def _target(m: Meter, e: RelayTargetSet) -> Meter:
    return _with(m, desired=e.target)


_MOVING = {RelayAction.CONNECT: RelayState.CONNECTING, RelayAction.DISCONNECT: RelayState.DISCONNECTING}
_REACHED = {RelayAction.CONNECT: RelayState.CONNECTED, RelayAction.DISCONNECT: RelayState.DISCONNECTED}


def _issued(m: Meter, e: RelayCommandIssued) -> Meter:
    before = m.pending
    if before is not None and before.retry_at is None:
        raise MeterInvariantError(
            f"{m.account}: {e.command_id} issued while {before.command_id} is in flight"
        )
    if before is not None and before.action is not e.action:
        raise MeterInvariantError(f"{m.account}: {e.command_id} retries a {before.action} as {e.action}")
    if e.action not in _MOVING:
        raise MeterInvariantError(f"{m.account}: a {e.action} is not a relay command")
    pending = PendingRelayCommand(
        command_id=e.command_id,
        action=e.action,
        attempt=e.attempt,
        issued_at=e.at,
        expires_at=e.expires_at,
        from_relay=before.from_relay if before is not None else m.relay,
        reason=e.reason,
        correlation_id=e.correlation_id,
        origin=e.origin,
        engineer_id=e.engineer_id,
    )
    return _with(m, pending=pending, relay=_MOVING[e.action], seq=m.seq + 1)


def _pending(m: Meter, command_id: str | None) -> PendingRelayCommand:
    if m.pending is None or m.pending.command_id != command_id:
        raise MeterInvariantError(f"{m.account}: event for command {command_id}, which is not pending")
    return m.pending


def _cancelled(m: Meter, e: RelayCommandCancelled) -> Meter:
    p = _pending(m, e.command_id)
    # A cancel can race the meter: if the head-end had it, assume it ran and drive back from there.
    relay = _REACHED[p.action] if e.in_flight else p.from_relay
    return _with(m, pending=None, relay=relay)


def _retry_scheduled(m: Meter, e: RelayCommandRetryScheduled) -> Meter:
    p = _pending(m, e.command_id)
    return _with(m, pending=dataclasses.replace(p, retry_at=e.retry_at))


def _failed(m: Meter, e: RelayCommandFailed) -> Meter:
    return _with(m, pending=None, relay=_pending(m, e.command_id).from_relay)


def _confirmed(m: Meter, e: RelayStateConfirmed) -> Meter:
    _pending(m, e.command_id)
    if e.relay not in (RelayState.CONNECTED, RelayState.DISCONNECTED):
        raise MeterInvariantError(f"{m.account}: confirmed as {e.relay}")
    return _with(m, pending=None, relay=e.relay)


def _awaiting(m: Meter, e: AwaitingButtonPress) -> Meter:
    if e.command_id is not None:
        _pending(m, e.command_id)
    else:
        _nothing_pending(m)
    return _with(m, pending=None, relay=RelayState.AWAITING_BUTTON)


def _nothing_pending(m: Meter) -> None:
    if m.pending is not None:
        raise MeterInvariantError(f"{m.account}: relay read applied over pending {m.pending.command_id}")


def _reported(m: Meter, e: RelayStateReported) -> Meter:
    _nothing_pending(m)
    return _with(m, relay=e.relay)


def _wo_opened(m: Meter, e: WorkOrderOpened) -> Meter:
    if m.work_order is not None:
        raise MeterInvariantError(f"{m.account}: {e.work_order_id} opened over {m.work_order.work_order_id}")
    order = FieldWorkOrder(work_order_id=e.work_order_id, action=e.action)
    return _with(m, work_order=order, seq=m.seq + 1)


def _wo_closed(m: Meter, e: WorkOrderClosed) -> Meter:
    if m.work_order is None or m.work_order.work_order_id != e.work_order_id:
        raise MeterInvariantError(f"{m.account}: closing {e.work_order_id}, which is not open")
    return _with(m, work_order=None)


def _charged(m: Meter, e: ReconnectionChargeApplied) -> Meter:
    return _with(m, dues_paise=m.dues_paise + e.amount_paise)


def _override(m: Meter, e: OverrideApplied) -> Meter:
    if e.action is OverrideAction.PROTECT or e.action is OverrideAction.UNPROTECT:
        return _with(m, protected=e.action is OverrideAction.PROTECT)
    if e.action is OverrideAction.HOLD or e.action is OverrideAction.RELEASE:
        return _with(m, on_hold=e.action is OverrideAction.HOLD)
    return m  # connect/disconnect: the audit record; the relay events that follow change state


_EVOLVERS: dict[type[Any], Callable[[Meter, Any], Meter]] = {
    MeterUpdated: _updated,
    BillPosted: _bill_posted,
    PaymentApplied: _payment_applied,
    RebateGranted: _rebate,
    SurchargeApplied: _surcharge,
    DisconnectionNoticeIssued: _notice_issued,
    DisconnectionNoticeWithdrawn: _notice_withdrawn,
    DisconnectionDeferred: _deferred,
    RelayTargetSet: _target,
    RelayCommandIssued: _issued,
    RelayCommandCancelled: _cancelled,
    RelayCommandRetryScheduled: _retry_scheduled,
    RelayCommandFailed: _failed,
    RelayStateConfirmed: _confirmed,
    AwaitingButtonPress: _awaiting,
    RelayStateReported: _reported,
    WorkOrderOpened: _wo_opened,
    WorkOrderClosed: _wo_closed,
    ReconnectionChargeApplied: _charged,
    OverrideApplied: _override,
}


def evolve(state: Meter | None, event: MeterEvent) -> Meter:
    """The state after ``event``. Pure; raises `MeterInvariantError` if the event cannot apply."""
    if type(event) is MeterRegistered:
        if state is not None:
            raise MeterInvariantError(f"{event.account}: registered twice")
        return _registered(event)
    if state is None:
        raise MeterInvariantError(f"{event.account}: {type(event).__name__} before MeterRegistered")
    if event.account != state.account:
        raise MeterInvariantError(f"{state.account}: event for {event.account}")
    return _EVOLVERS[type(event)](state, event)


def apply_all(state: Meter | None, events: Iterable[MeterEvent]) -> Meter | None:
    """Fold `evolve` over ``events`` (recovery: snapshot + journal tail)."""
    for event in events:
        state = evolve(state, event)
    return state
