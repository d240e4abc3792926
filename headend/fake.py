"""`FakeHeadEnd`: an in-memory head-end adapter for unit tests of other components (no sockets).

It speaks the `HeadEndDriver` surface, so a gateway actor can run on it unchanged, and it keeps a
`Fleet` with the simulator's class-70 semantics, so outcomes are the relay's truth. By default a
command ends at once (its outcome returned by `submit`); hooks change that, first matching hook wins:

    fake.drop_when(lambda c: c.meter == "M1")          # never ends (a lost result, forever)
    fake.delay_when(lambda c: True, seconds=5.0)       # ends on the first on_tick ≥ 5 s later
    fake.reject_when(lambda c: ..., reason="rate_limited")
    fake.fail_when(lambda c: ..., error="no_communication")   # retryable from RETRYABLE_ERRORS

A delayed command whose expires_at comes before its turn is not executed and ends expired. A CREDIT
command (a prepaid meter's balance, issue 16) ends APPLIED and is kept in ``fake.credits``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from headend.clock import Clock, ManualClock
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.sim.fleet import Fleet
from protocols.headend import (
    RETRYABLE_ERRORS,
    HesAction,
    HesCommand,
    HesControlState,
    HesRejectReason,
)

__all__ = ["FakeHeadEnd"]

Predicate = Callable[[HesCommand], bool]

_KIND = {
    HesControlState.CONNECTED: OutcomeKind.CONNECTED,
    HesControlState.DISCONNECTED: OutcomeKind.DISCONNECTED,
    HesControlState.READY_FOR_RECONNECTION: OutcomeKind.READY_FOR_RECONNECTION,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Hook:
    when: Predicate
    action: str  # drop | delay | reject | fail
    seconds: float = 0.0
    reason: str | None = None
    error: str | None = None
    retryable: bool = False


class FakeHeadEnd:
    """In-memory head-end adapter. `clock` defaults to a `ManualClock` the test advances."""

    def __init__(self, fleet: Fleet | None = None, *, clock: Clock | None = None) -> None:
        self.fleet = fleet or Fleet(1000)
        self.clock: Clock = clock or ManualClock()
        self.submitted: list[HesCommand] = []
        self.credits: dict[str, int] = {}  # serial → the balance its last applied CREDIT command carried
        self._hooks: list[_Hook] = []
        self._pending: set[str] = set()
        self._delayed: list[tuple[float, int, HesCommand]] = []
        self._seq = 0
        self._closed = False

    # --- hooks ------------------------------------------------------------------------------

    def drop_when(self, when: Predicate) -> None:
        self._hooks.append(_Hook(when=when, action="drop"))

    def delay_when(self, when: Predicate, seconds: float) -> None:
        self._hooks.append(_Hook(when=when, action="delay", seconds=seconds))

    def reject_when(self, when: Predicate, reason: str = HesRejectReason.RATE_LIMITED) -> None:
        self._hooks.append(_Hook(when=when, action="reject", reason=reason))

    def fail_when(self, when: Predicate, error: str, retryable: bool | None = None) -> None:
        flag = error in RETRYABLE_ERRORS if retryable is None else retryable
        self._hooks.append(_Hook(when=when, action="fail", error=error, retryable=flag))

    def clear_hooks(self) -> None:
        self._hooks.clear()

    # --- HeadEndDriver ----------------------------------------------------------------------

    def fileno(self) -> int | None:
        return None

    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]:
        now = self.clock.now()
        out: list[HeadEndOutcome] = []
        seen: set[str] = set()
        for cmd in commands:
            if self._closed or cmd.command_id in self._pending or cmd.command_id in seen:
                continue  # like the adapter: a pending command id is not run twice
            seen.add(cmd.command_id)
            self.submitted.append(cmd)
            if now >= cmd.expires_at:
                out.append(self._outcome(cmd, OutcomeKind.EXPIRED, now))
                continue
            hook = next((h for h in self._hooks if h.when(cmd)), None)
            if hook is None:
                out.append(self._execute(cmd, now))
            elif hook.action == "drop":
                self._pending.add(cmd.command_id)
            elif hook.action == "delay":
                self._pending.add(cmd.command_id)
                self._seq += 1
                heapq.heappush(self._delayed, (now + hook.seconds, self._seq, cmd))
            elif hook.action == "reject":
                out.append(self._outcome(cmd, OutcomeKind.REJECTED, now, reason=hook.reason))
            else:
                out.append(
                    self._outcome(cmd, OutcomeKind.FAILED, now, error=hook.error, retryable=hook.retryable)
                )
        return out

    def on_readable(self) -> list[HeadEndOutcome]:
        return []

    def on_tick(self) -> list[HeadEndOutcome]:
        now = self.clock.now()
        out: list[HeadEndOutcome] = []
        while self._delayed and self._delayed[0][0] <= now:
            due, _, cmd = heapq.heappop(self._delayed)
            self._pending.discard(cmd.command_id)
            if due >= cmd.expires_at:
                out.append(self._outcome(cmd, OutcomeKind.EXPIRED, now))
            else:
                out.append(self._execute(cmd, now))
        return out

    def next_tick_in(self, poll_io: bool = True) -> float | None:
        if not self._delayed:
            return None
        return max(0.0, self.clock.to_real(self._delayed[0][0] - self.clock.now()))

    def close(self) -> None:
        self._closed = True

    # --- truth ------------------------------------------------------------------------------

    def _execute(self, cmd: HesCommand, now: float) -> HeadEndOutcome:
        index = self.fleet.index(cmd.meter)
        if index is None:
            return self._outcome(cmd, OutcomeKind.REJECTED, now, reason=HesRejectReason.UNKNOWN_METER)
        if cmd.action is HesAction.CREDIT:  # the fake takes credit updates, as a CIM head-end does
            if cmd.credit_paise is None:
                return self._outcome(cmd, OutcomeKind.FAILED, now, error="no_credit_amount")
            self.credits[cmd.meter] = cmd.credit_paise
            return HeadEndOutcome(command_id=cmd.command_id, meter=cmd.meter, action=cmd.action,
                                  kind=OutcomeKind.APPLIED, at=now, attempts=1)
        _, error = self.fleet.apply(index, cmd.action)
        if error is not None:
            retryable = error in RETRYABLE_ERRORS
            return self._outcome(cmd, OutcomeKind.FAILED, now, error=error, retryable=retryable)
        state = self.fleet.state(cmd.meter)
        assert state.control_state is not None
        return HeadEndOutcome(
            command_id=cmd.command_id,
            meter=cmd.meter,
            action=cmd.action,
            kind=_KIND[state.control_state],
            at=now,
            attempts=0 if cmd.action is HesAction.READ else 1,
            control_state=state.control_state,
            output_state=state.output_state,
            control_mode=state.control_mode,
        )

    @staticmethod
    def _outcome(
        cmd: HesCommand,
        kind: OutcomeKind,
        now: float,
        *,
        reason: str | None = None,
        error: str | None = None,
        retryable: bool = False,
    ) -> HeadEndOutcome:
        attempts = 1 if kind is OutcomeKind.FAILED and cmd.action is not HesAction.READ else 0
        return HeadEndOutcome(
            command_id=cmd.command_id,
            meter=cmd.meter,
            action=cmd.action,
            kind=kind,
            at=now,
            attempts=attempts,
            reason=reason,
            error=error,
            retryable=retryable,
        )
