"""The final outcome of one head-end command: exactly one per command id, from every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.headend import HesAction, HesControlState

__all__ = ["HeadEndOutcome", "OutcomeKind", "relay_outcome"]


class OutcomeKind(StrEnum):
    CONNECTED = "connected"  # read back: control_state connected, relay closed
    DISCONNECTED = "disconnected"  # read back: control_state disconnected, relay open
    READY_FOR_RECONNECTION = "ready_for_reconnection"  # read back: awaiting the consumer's button
    FAILED = "failed"  # `error` says why, `retryable` whether trying again later may help
    EXPIRED = "expired"  # expires_at passed first; the command was never executed
    REJECTED = "rejected"  # the head-end refused it (`reason`), e.g. unknown meter
    APPLIED = "applied"  # a CREDIT command the head-end processed: the meter holds the balance sent


_CONNECTED, _DISCONNECTED = OutcomeKind.CONNECTED, OutcomeKind.DISCONNECTED
_READY, _FAILED, _REJECTED = OutcomeKind.READY_FOR_RECONNECTION, OutcomeKind.FAILED, OutcomeKind.REJECTED
# identity checks, not set membership: hashing an enum member runs Python code, and this is hot
_RELAY_KINDS = (_CONNECTED, _DISCONNECTED, _READY)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadEndOutcome:
    """How a command ended. Relay kinds carry the read-back state; `at` is on the adapter's clock.

    `attempts` counts the switching commands sent for it (0 if none was sent). A READ command ends in
    the relay kind it read.
    """

    command_id: str
    meter: str
    action: HesAction
    kind: OutcomeKind
    at: float
    attempts: int = 0
    error: str | None = None
    retryable: bool = False
    reason: str | None = None
    control_state: HesControlState | None = None
    output_state: bool | None = None
    control_mode: int | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if (kind is _FAILED) != (self.error is not None):
            raise ValueError("an error is given exactly when the outcome is failed")
        if (kind is _REJECTED) != (self.reason is not None):
            raise ValueError("a reason is given exactly when the outcome is rejected")
        if self.retryable and kind is not _FAILED:
            raise ValueError("only a failure can be retryable")
        if self.control_state is None and (kind is _CONNECTED or kind is _DISCONNECTED or kind is _READY):
            raise ValueError("a relay outcome carries the state read back")

    @property
    def awaiting_button(self) -> bool:
        """The meter took the reconnect but waits for the consumer to press its button."""
        return self.kind is OutcomeKind.READY_FOR_RECONNECTION

    @property
    def succeeded(self) -> bool:
        kind = self.kind
        return kind is _CONNECTED or kind is _DISCONNECTED or kind is _READY


# --- a fast constructor for the adapter's hot path -----------------------------------------------
# A frozen dataclass's __init__ sets each of the 12 fields through object.__setattr__ (~4 µs here);
# writing the slots through their descriptors costs ~1.5 µs. Used only for relay outcomes, whose
# invariants (no error, no reason, not retryable, a control_state) hold by construction below.

_FIELDS = (
    "command_id", "meter", "action", "kind", "at", "attempts", "error", "retryable", "reason",
    "control_state", "output_state", "control_mode",
)  # fmt: skip
assert tuple(HeadEndOutcome.__dataclass_fields__) == _FIELDS, "update relay_outcome with the fields"
_new = object.__new__
(_s_cid, _s_meter, _s_action, _s_kind, _s_at, _s_attempts, _s_error, _s_retryable, _s_reason,
 _s_cs, _s_os, _s_mode) = (getattr(HeadEndOutcome, f).__set__ for f in _FIELDS)  # fmt: skip


def relay_outcome(
    command_id: str,
    meter: str,
    action: HesAction,
    kind: OutcomeKind,
    at: float,
    attempts: int,
    control_state: HesControlState,
    output_state: bool | None,
    control_mode: int | None,
) -> HeadEndOutcome:
    """A CONNECTED / DISCONNECTED / READY_FOR_RECONNECTION outcome, built fast."""
    if not (kind is _CONNECTED or kind is _DISCONNECTED or kind is _READY) or control_state is None:
        raise ValueError("relay_outcome builds relay outcomes with a read-back state only")
    o = _new(HeadEndOutcome)
    _s_cid(o, command_id)
    _s_meter(o, meter)
    _s_action(o, action)
    _s_kind(o, kind)
    _s_at(o, at)
    _s_attempts(o, attempts)
    _s_error(o, None)
    _s_retryable(o, False)
    _s_reason(o, None)
    _s_cs(o, control_state)
    _s_os(o, output_state)
    _s_mode(o, control_mode)
    return o
