"""What the admin API shows: meters, journal events, payment traces and the node tree as plain JSON.

Pure functions from the runtime's records (`domain.state.Meter`, `domain.events`, the ledger's trace
record, `jodo.node.TreeStatus` and the actors' status replies) to dicts with str keys and plain values.
No Thespian here: `jodo.backend` gathers the records on its thread and calls these.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from domain.enums import BillingMode
from domain.events import (
    AwaitingButtonPress,
    BillingModeSet,
    ConsumptionDebited,
    EmergencyCreditRecovered,
    PaymentApplied,
    RelayCommandCancelled,
    RelayCommandFailed,
    RelayCommandIssued,
    RelayCommandRetryScheduled,
    RelayStateConfirmed,
    WorkOrderOpened,
)
from domain.state import Meter

__all__ = ["event_view", "meter_view", "pairs", "plain", "trace_view", "tree_view"]


def plain(value: Any) -> Any:
    """Dataclasses to dicts, enums to their values, tuples to lists, bytes to hex; recursively."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return str(value)


def meter_view(m: Meter) -> dict[str, Any]:
    """One meter entity, flat where an operator looks first (relay, dues), nested for the rest."""
    return {
        "account": m.account,
        "serial": m.serial,
        "relay": m.relay.value,
        "desired": m.desired.value,
        "dues_paise": m.dues_paise,
        "head_end": m.profile.head_end,
        "install_year": m.profile.install_year,
        "relay_capable": m.profile.relay_capable,
        "control_mode": m.profile.control_mode,
        "protected": m.protected,
        "on_hold": m.on_hold,
        "notice_at": m.notice_at,
        "switch_off_not_before": m.switch_off_not_before,
        "bill": plain(m.bill),
        "pending_command": plain(m.pending),
        "work_order": plain(m.work_order),
        "recent_payment_ids": list(m.recent_payment_ids),
        **_prepaid_view(m),
    }


def _prepaid_view(m: Meter) -> dict[str, Any]:
    """Billing mode; a prepaid meter's balance (= -dues), emergency credit and recent days (issue 16)."""
    p = m.prepaid
    if p is None:
        return {"billing_mode": "postpaid"}
    return {
        "billing_mode": "prepaid",
        "balance_paise": -m.dues_paise,
        "emergency_credit_paise": p.emergency_outstanding_paise,
        "emergency_period": p.emergency_period,
        "low_balance_notified": list(p.notified),
        "days_read": [plain(d) for d in p.days[-7:]],
        **_credit_view(p.credit),
    }


def _credit_view(c: Any) -> dict[str, Any]:
    """The last credit update sent to a meter that keeps its own credit (domain/credit.py); none: {}."""
    if c is None:
        return {}
    return {"meter_credit": {
        "command_id": c.command_id, "sent_balance_paise": c.balance_paise, "issued_at": c.issued_at,
        "attempt": c.attempt, "outcome": c.outcome or "in_flight", "error": c.error, "retry_at": c.retry_at,
        "applied_balance_paise": c.applied_paise,
    }}


def event_view(event: Any) -> dict[str, Any]:
    """A journal event: ``{"event": <class name>, "at": ..., <its fields>}``."""
    body = plain(event)
    return {"event": type(event).__name__, **(body if isinstance(body, dict) else {"value": body})}


_RESULTS = (RelayStateConfirmed, AwaitingButtonPress, RelayCommandFailed, RelayCommandCancelled,
            RelayCommandRetryScheduled)


def trace_view(record: Mapping[str, Any], history: Sequence[Any]) -> dict[str, Any]:
    """The ledger record of one payment plus its hops, oldest first, each with its time.

    ``history`` is the meter's journal (any order). Hops: ``received`` (front door), ``committed``
    (ledger), ``recovered`` (a prepaid recharge's `EmergencyCreditRecovered`: the emergency credit it paid
    back first), ``credited`` (the meter's `PaymentApplied`; for a prepaid meter the balance after is
    ``-dues_after_paise``, also given as ``balance_after_paise``), ``applied`` (the desk saw the shard's
    acknowledgement), ``command`` (the relay command the payment caused), then each ``result`` of that
    command (confirmed, awaiting button, retry, failed) and any field ``work_order``. A hop not yet
    reached is absent; ``stage`` names the last one.
    """
    payment_id = str(record.get("payment_id", ""))
    hops: list[dict[str, Any]] = []

    def hop(name: str, at: Any, **extra: Any) -> None:
        if isinstance(at, int | float) and at:
            hops.append({"hop": name, "at": at, **{k: v for k, v in extra.items() if v is not None}})

    hop("received", record.get("received_at"), gateway=record.get("gateway"))
    hop("committed", record.get("committed_at"), status=record.get("status"))
    events = sorted(history, key=lambda e: getattr(e, "at", 0))
    commands = {e.command_id for e in events
                if isinstance(e, RelayCommandIssued) and e.correlation_id == payment_id}
    prepaid = False  # as far as the history shows: a prepaid meter's reads are debited
    for e in events:
        if isinstance(e, EmergencyCreditRecovered) and e.payment_id == payment_id:
            prepaid = True
            hop("recovered", e.at, amount_paise=e.amount_paise,
                outstanding_after_paise=e.outstanding_after_paise)
        elif isinstance(e, BillingModeSet):
            prepaid = e.mode is BillingMode.PREPAID
        elif isinstance(e, ConsumptionDebited):
            prepaid = True
        elif isinstance(e, PaymentApplied) and e.payment_id == payment_id:
            balance = -e.dues_after_paise if prepaid else None
            hop("credited", e.at, amount_paise=e.amount_paise, dues_after_paise=e.dues_after_paise,
                balance_after_paise=balance)
    hop("applied", record.get("applied_at"))
    hop("suspense", record.get("suspended_at"))
    for e in events:
        if isinstance(e, RelayCommandIssued) and e.command_id in commands:
            hop("command", e.at, command_id=e.command_id, action=e.action.value, attempt=e.attempt)
        elif isinstance(e, _RESULTS) and getattr(e, "command_id", None) in commands:
            hop("result", e.at, **_result_fields(e))
        elif isinstance(e, WorkOrderOpened) and e.correlation_id in ({payment_id} | commands):
            hop("work_order", e.at, work_order_id=e.work_order_id, action=e.action.value, reason=e.reason)
    hops.sort(key=lambda h: (h["at"], _HOP_ORDER.get(h["hop"], 9)))
    return {**plain(dict(record)), "hops": hops, "stage": hops[-1]["hop"] if hops else "unknown"}


_HOP_ORDER = {"received": 0, "committed": 1, "recovered": 2, "credited": 3, "applied": 4, "suspense": 4,
              "command": 5, "result": 6, "work_order": 7}


def _result_fields(e: Any) -> dict[str, Any]:
    if isinstance(e, RelayStateConfirmed):
        return {"outcome": "confirmed", "relay": e.relay.value, "command_id": e.command_id}
    if isinstance(e, AwaitingButtonPress):
        return {"outcome": "awaiting_button", "command_id": e.command_id}
    if isinstance(e, RelayCommandFailed):
        return {"outcome": "failed", "command_id": e.command_id, "error_code": e.error_code}
    if isinstance(e, RelayCommandCancelled):
        return {"outcome": "cancelled", "command_id": e.command_id, "reason": e.reason}
    assert isinstance(e, RelayCommandRetryScheduled)
    return {"outcome": "retry", "command_id": e.command_id, "status": e.status.value,
            "retry_at": e.retry_at, "error_code": e.error_code}


def tree_view(view: Any) -> dict[str, Any]:
    """A `jodo.node.SupervisorView` (recursively): supervisor, state, pids, children, restarts."""
    status = view.status
    subtrees = {sub.status.supervisor_id: sub for sub in view.subtrees}
    children = []
    for child in status.children:
        item: dict[str, Any] = {
            "id": child.id, "kind": child.kind.rsplit(".", 1)[-1], "type": str(child.type.value),
            "state": str(child.state.value), "pid": child.pid, "restarts": child.restarts,
        }
        if child.id in subtrees:
            item["supervisor"] = tree_view(subtrees[child.id])
        if child.id in view.unreachable:
            item["unreachable"] = True
        children.append(item)
    return {
        "supervisor": status.supervisor_id, "pid": status.pid, "pgid": status.pgid,
        "state": str(status.state.value), "ready": status.ready,
        "restarts_by_kind": {k.rsplit(".", 1)[-1]: n for k, n in status.restarts_by_kind},
        "dead_letters": status.dead_letters, "children": children,
    }


def pairs(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    """``(("a", 1), ...)`` as ``{"a": 1, ...}`` (status replies carry counts as pairs)."""
    return {str(k): int(v) for k, v in items}
