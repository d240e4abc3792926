"""The small closed vocabularies of the meter core. States are types, never booleans or free strings.

DLMS/COSEM references are to the Disconnect control interface class (class_id 70), research/domain.md §1.1.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = [
    "CommandOrigin",
    "ControlState",
    "NoticeTemplate",
    "OverrideAction",
    "PaymentOutcome",
    "RelayAction",
    "RelayResultStatus",
    "RelayState",
    "RelayTarget",
    "WorkOrderAction",
    "WorkOrderOutcome",
]


class RelayState(StrEnum):
    """What jodo believes the relay is doing (DESIGN §2)."""

    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"  # a disconnect command is pending (in flight or awaiting retry)
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"  # a connect command is pending (in flight or awaiting retry)
    AWAITING_BUTTON = "awaiting_button"  # DLMS ready_for_reconnection: the consumer must press the button


class RelayTarget(StrEnum):
    """What jodo wants the relay to be, and why: the reason decides what may reverse it."""

    CONNECTED = "connected"
    OFF_FOR_DUES = "off_for_dues"  # automatic disconnection: dues <= threshold (or protect/hold) reverses it
    OFF_BY_ENGINEER = "off_by_engineer"  # a deliberate human action: only an engineer's connect reverses it


class RelayAction(StrEnum):
    """What a relay command asks the head-end to do. The core issues connect and disconnect only."""

    CONNECT = "connect"  # DLMS remote_reconnect, method 2
    DISCONNECT = "disconnect"  # DLMS remote_disconnect, method 1
    READ = "read"  # read control_state/output_state (for head-end reconciliation)
    # tell a prepaid meter that keeps its own credit its balance (CIM 3.20.22.13; domain/credit.py): not
    # a relay switch, never a meter's pending relay command
    CREDIT = "credit"


class ControlState(IntEnum):
    """DLMS class 70 attribute 3 (research §1.1, Gurux ControlState)."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


class RelayResultStatus(StrEnum):
    """Outcome of one relay command, as the head-end reports it (CIM EndDeviceEvents, research §2)."""

    PROCESSED = "processed"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    # Not head-end outcomes: the gateway's disconnect guard (domain/guard.py) keeps a disconnect
    # (the meter parks it: no expiry, no retry) and later releases it (the meter issues it afresh).
    HELD = "held"
    RELEASED = "released"


class CommandOrigin(StrEnum):
    """Who caused a relay command. Only automatic disconnects are bound by the no-disconnection windows."""

    AUTOMATIC = "automatic"
    ENGINEER = "engineer"


class WorkOrderAction(StrEnum):
    """What a field crew is asked to do at the meter."""

    RECONNECT = "reconnect"
    DISCONNECT = "disconnect"


class WorkOrderOutcome(StrEnum):
    DONE = "done"  # the relay was seen in the state the work order asked for
    CANCELLED = "cancelled"  # no longer wanted (e.g. the consumer paid before a field disconnection)


class NoticeTemplate(StrEnum):
    """Consumer notices (DESIGN §3; research §7.8)."""

    DISCONNECTION_NOTICE = "disconnection_notice"
    PAYMENT_RECEIVED = "payment_received"
    SUPPLY_RESTORED = "supply_restored"
    PRESS_BUTTON = "press_button"
    RECONNECT_FAILED = "reconnect_failed"
    FIELD_VISIT_SCHEDULED = "field_visit_scheduled"
    DISCONNECTED = "disconnected"
    LOW_BALANCE = "low_balance"  # prepaid: a threshold crossed (share of the month used, days left, zero)
    EMERGENCY_CREDIT = "emergency_credit"  # prepaid: emergency credit granted


class PaymentOutcome(StrEnum):
    """The meter's answer to a ClearPayment, returned to the payment desk."""

    APPLIED = "applied"  # credited now or earlier (a redelivery)
    UNKNOWN_ACCOUNT = "unknown_account"  # no such meter here: the desk moves it to suspense


class OverrideAction(StrEnum):
    """What an engineer may do to one meter (always audited)."""

    CONNECT = "connect"
    DISCONNECT = "disconnect"
    PROTECT = "protect"  # never disconnect automatically (e.g. life-support), reconnect if off for dues
    UNPROTECT = "unprotect"
    HOLD = "hold"  # suspend automatic disconnection (dispute, amount paid under protest: s.56)
    RELEASE = "release"


class BillingMode(StrEnum):
    """How a meter's money works (issue 16): dues billed monthly, or a balance debited by reads."""

    POSTPAID = "postpaid"
    PREPAID = "prepaid"
