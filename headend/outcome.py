"""The final outcome of one head-end command: exactly one per command id, from every adapter."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocols.headend import HesAction, HesControlState

__all__ = ["HeadEndOutcome", "OutcomeKind"]


class OutcomeKind(StrEnum):
    CONNECTED = "connected"  # read back: control_state connected, relay closed
    DISCONNECTED = "disconnected"  # read back: control_state disconnected, relay open
    READY_FOR_RECONNECTION = "ready_for_reconnection"  # read back: awaiting the consumer's button
    FAILED = "failed"  # `error` says why, `retryable` whether trying again later may help
    EXPIRED = "expired"  # expires_at passed first; the command was never executed
    REJECTED = "rejected"  # the head-end refused it (`reason`), e.g. unknown meter


_RELAY_KINDS = frozenset(
    {OutcomeKind.CONNECTED, OutcomeKind.DISCONNECTED, OutcomeKind.READY_FOR_RECONNECTION}
)


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
        if (self.kind is OutcomeKind.FAILED) != (self.error is not None):
            raise ValueError("an error is given exactly when the outcome is failed")
        if (self.kind is OutcomeKind.REJECTED) != (self.reason is not None):
            raise ValueError("a reason is given exactly when the outcome is rejected")
        if self.retryable and self.kind is not OutcomeKind.FAILED:
            raise ValueError("only a failure can be retryable")
        if self.kind in _RELAY_KINDS and self.control_state is None:
            raise ValueError("a relay outcome carries the state read back")

    @property
    def awaiting_button(self) -> bool:
        """The meter took the reconnect but waits for the consumer to press its button."""
        return self.kind is OutcomeKind.READY_FOR_RECONNECTION

    @property
    def succeeded(self) -> bool:
        return self.kind in _RELAY_KINDS
