"""A circuit breaker per head-end, as a pure state machine (no clock reads, no I/O).

    CLOSED ──(failure_threshold consecutive failures)──► OPEN
    OPEN ──(now ≥ open_until; `allow` lets one probe out)──► HALF_OPEN
    HALF_OPEN ──probe succeeds──► CLOSED          (cooldown reset)
    HALF_OPEN ──probe fails──► OPEN               (cooldown * multiplier, capped)

The adapter records a failure for every refused/failed connect, a handshake that does not finish, a
lost connection and an unanswered submit; a success for a finished handshake and every answered
submit. While the breaker is not CLOSED the adapter opens no connection except the single probe, and
queued commands wait (expiring on time) instead of becoming a retry storm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

__all__ = [
    "Breaker",
    "BreakerPhase",
    "BreakerPolicy",
    "breaker_allow",
    "breaker_failure",
    "breaker_retry_at",
    "breaker_success",
]


class BreakerPhase(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """Defaults: trip after 3 straight failures, first cooldown 1 s, doubling to at most 5 s."""

    failure_threshold: int = 3
    open_seconds: float = 1.0
    max_open_seconds: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be ≥ 1")
        if not 0 < self.open_seconds <= self.max_open_seconds:
            raise ValueError("need 0 < open_seconds ≤ max_open_seconds")
        if self.multiplier < 1:
            raise ValueError("multiplier must be ≥ 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Breaker:
    phase: BreakerPhase = BreakerPhase.CLOSED
    failures: int = 0  # consecutive, counted in CLOSED
    cooldown: float = 0.0  # the OPEN period now in force; 0 while CLOSED
    open_until: float = 0.0
    probing: bool = False  # HALF_OPEN: the one probe is out
    trips: int = 0  # CLOSED → OPEN transitions, ever

    def __post_init__(self) -> None:
        if self.failures < 0 or self.trips < 0:
            raise ValueError("counts are never negative")
        if self.probing and self.phase is not BreakerPhase.HALF_OPEN:
            raise ValueError("only a half-open breaker has a probe out")


def breaker_allow(b: Breaker, now: float) -> tuple[bool, Breaker]:
    """May a request (a connection attempt) go out now? Moves OPEN → HALF_OPEN when the cooldown ends."""
    if b.phase is BreakerPhase.CLOSED:
        return True, b
    if b.phase is BreakerPhase.OPEN:
        if now < b.open_until:
            return False, b
        return True, replace(b, phase=BreakerPhase.HALF_OPEN, probing=True)
    if b.probing:
        return False, b
    return True, replace(b, probing=True)


def breaker_success(b: Breaker) -> Breaker:
    """A request succeeded: the breaker closes and forgets its failures."""
    if b.phase is BreakerPhase.CLOSED and b.failures == 0:
        return b
    return Breaker(trips=b.trips)


def breaker_failure(b: Breaker, policy: BreakerPolicy, now: float) -> Breaker:
    """A request failed. In CLOSED count it (trip at the threshold); a failed probe reopens, longer."""
    if b.phase is BreakerPhase.CLOSED:
        failures = b.failures + 1
        if failures < policy.failure_threshold:
            return replace(b, failures=failures)
        return Breaker(
            phase=BreakerPhase.OPEN,
            failures=failures,
            cooldown=policy.open_seconds,
            open_until=now + policy.open_seconds,
            trips=b.trips + 1,
        )
    if b.phase is BreakerPhase.HALF_OPEN:
        cooldown = min(b.cooldown * policy.multiplier, policy.max_open_seconds)
        return replace(
            b, phase=BreakerPhase.OPEN, cooldown=cooldown, open_until=now + cooldown, probing=False
        )
    return b  # OPEN: a straggler's failure changes nothing


def breaker_retry_at(b: Breaker) -> float | None:
    """When `breaker_allow` may next answer yes: None if it does now or waits on the probe's fate."""
    return b.open_until if b.phase is BreakerPhase.OPEN else None
