"""OTP supervision as data and pure functions (after Erlang/OTP ``lib/stdlib/src/supervisor.erl``).

A supervisor actor (``supervisors.supervisor``) only translates Thespian events into calls here:

- `ChildSpec` / `SupervisorFlags`: what to start and how to react, as plain data.
- `should_restart`: the ``restart`` type of a child against its exit reason.
- `add_restart`: the intensity/period sliding window; `IntensityExceeded` means "escalate".
- `restart_plan`: which children to stop (reverse start order) and start again (start order).
- `auto_shutdown_triggered`: OTP's ``auto_shutdown`` with significant children.
- `backoff_delay`: exponential backoff with jitter drawn from a caller-owned ``random.Random``.

No clock reads: ``now`` is always a parameter (monotonic seconds, as a float).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AutoShutdown",
    "ChildSpec",
    "ChildType",
    "ExitReason",
    "InitFactory",
    "IntensityExceeded",
    "Restart",
    "RestartPlan",
    "Strategy",
    "SupervisorFlags",
    "add_restart",
    "auto_shutdown_triggered",
    "backoff_delay",
    "children_to_restart",
    "restart_plan",
    "should_restart",
]


class Restart(StrEnum):
    """OTP ``restart()``: when a terminated child is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never


class Strategy(StrEnum):
    """OTP ``strategy()``: which siblings share a failed child's fate."""

    ONE_FOR_ONE = "one_for_one"  # only the failed child
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # the failed child and those started after it


class ChildType(StrEnum):
    """OTP ``child_type()``: a supervisor child is asked to stop its own tree in order."""

    WORKER = "worker"
    SUPERVISOR = "supervisor"


class ExitReason(StrEnum):
    """Why a child exited, as far as its supervisor can tell.

    Thespian's ``ChildActorExited`` carries no reason: an exit is ``NORMAL`` only when the child said so
    first, ``SHUTDOWN`` when its supervisor asked it to stop, and ``ABNORMAL`` otherwise (a crash, a
    kill -9, an exception at start).
    """

    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    ABNORMAL = "abnormal"


class AutoShutdown(StrEnum):
    """OTP ``auto_shutdown()``: whether significant children ending (not restarted) ends the supervisor."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


@dataclass(frozen=True, slots=True, kw_only=True)
class InitFactory:
    """Names a callable ``"package.module:function"`` that builds a child's init message.

    The supervisor calls it as ``function(spec, restarts)`` before every (re)start, so an init can carry
    something fresh (an epoch, a configuration re-read).
    """

    path: str

    def __post_init__(self) -> None:
        module, sep, name = self.path.partition(":")
        if not (module and sep and name):
            raise ValueError(f"InitFactory path must be 'module:function', got {self.path!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """OTP ``child_spec()``. ``start`` is an importable actor class path, ``"package.module.Class"``.

    ``init`` is the first message the child receives (any picklable message), an `InitFactory`, or
    None for a bare ``ChildStart``. ``shutdown`` is the seconds a child gets to stop before its
    supervisor kills it (OTP's default 5000 ms for workers).
    """

    id: str
    start: str
    restart: Restart = Restart.PERMANENT
    init: object = None
    shutdown: float = 5.0
    type: ChildType = ChildType.WORKER
    significant: bool = False

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a child spec needs a non-empty id")
        module, _, cls = self.start.rpartition(".")
        if not (module and cls):
            raise ValueError(f"{self.id}: start must be 'package.module.Class', got {self.start!r}")
        if self.shutdown < 0:
            raise ValueError(f"{self.id}: shutdown must be >= 0 seconds")
        if self.significant and self.restart is Restart.PERMANENT:
            # supervisor.erl refuses this too: a permanent child never ends, so it cannot be significant
            raise ValueError(f"{self.id}: a significant child must be transient or temporary")

    @property
    def kind(self) -> str:
        """The bare class name: a bounded label for restart counts and metrics."""
        return self.start.rpartition(".")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorFlags:
    """OTP ``sup_flags()`` plus backoff. Defaults mirror supervisor.erl (1 restart in 5 s).

    ``backoff_base`` 0 restarts at once, like OTP; otherwise the n-th restart inside the period waits
    `backoff_delay` (n, base, cap).
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER
    backoff_base: float = 0.0
    backoff_cap: float = 10.0

    def __post_init__(self) -> None:
        if self.intensity < 0:
            raise ValueError("intensity must be >= 0")
        if self.period <= 0:
            raise ValueError("period must be > 0 seconds")
        if self.backoff_base < 0 or self.backoff_cap < self.backoff_base:
            raise ValueError("need 0 <= backoff_base <= backoff_cap")


@dataclass(frozen=True, slots=True, kw_only=True)
class IntensityExceeded:
    """`add_restart`'s answer when one more restart breaks intensity/period: the supervisor escalates."""

    restarts: tuple[float, ...]
    intensity: int
    period: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPlan:
    """Children to stop, in the order to stop them (reverse start order), then children to start again,
    in start order. The failed child is in ``start`` (never in ``stop``: it is already gone)."""

    stop: tuple[str, ...]
    start: tuple[str, ...]


def should_restart(restart: Restart, reason: ExitReason) -> bool:
    """Whether a child that exited for ``reason`` is started again (supervisor.erl ``do_restart``)."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return reason is ExitReason.ABNORMAL
    return False


def add_restart(
    restarts: tuple[float, ...], now: float, flags: SupervisorFlags
) -> tuple[float, ...] | IntensityExceeded:
    """Record a restart at ``now`` in the sliding window (supervisor.erl ``add_restart/3``).

    ``restarts`` are earlier restart times, oldest first. Those older than ``now - period`` fall out of
    the window; the rest, plus ``now``, are returned, unless they number more than ``intensity``: then
    the supervisor must give up and escalate. Intensity 0 therefore allows no restart at all.
    """
    threshold = now - flags.period
    window = (*(t for t in restarts if t >= threshold), now)
    if len(window) > flags.intensity:
        return IntensityExceeded(restarts=window, intensity=flags.intensity, period=flags.period)
    return window


def children_to_restart(
    specs: Sequence[ChildSpec], failed_id: str, strategy: Strategy
) -> tuple[str, ...]:
    """The ids sharing ``failed_id``'s fate under ``strategy``, in start order (failed one included)."""
    ids = tuple(spec.id for spec in specs)
    if failed_id not in ids:
        raise KeyError(f"no child {failed_id!r} in these specs")
    if strategy is Strategy.ONE_FOR_ONE:
        return (failed_id,)
    if strategy is Strategy.REST_FOR_ONE:
        return ids[ids.index(failed_id) :]
    return ids


def restart_plan(specs: Sequence[ChildSpec], failed_id: str, strategy: Strategy) -> RestartPlan:
    """What restarting ``failed_id`` involves: siblings to stop, then children to start.

    As in supervisor.erl's ``terminate_children``, a temporary sibling stopped on the way is not
    started again. The caller has already decided (`should_restart`) that the failed child restarts.
    """
    by_id = {spec.id: spec for spec in specs}
    affected = children_to_restart(specs, failed_id, strategy)
    stop = tuple(cid for cid in reversed(affected) if cid != failed_id)
    start = tuple(
        cid
        for cid in affected
        if cid == failed_id or by_id[cid].restart is not Restart.TEMPORARY
    )
    return RestartPlan(stop=stop, start=start)


def auto_shutdown_triggered(
    flags: SupervisorFlags, specs: Sequence[ChildSpec], ended_id: str, remaining_ids: Sequence[str]
) -> bool:
    """Whether ``ended_id`` ending for good (not restarted) ends its supervisor too.

    ``remaining_ids`` are the children still running or about to be restarted.
    """
    by_id = {spec.id: spec for spec in specs}
    if not by_id[ended_id].significant or flags.auto_shutdown is AutoShutdown.NEVER:
        return False
    if flags.auto_shutdown is AutoShutdown.ANY_SIGNIFICANT:
        return True
    return not any(by_id[cid].significant for cid in remaining_ids if cid in by_id)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before restart number ``attempt`` (0 for the first), with "equal jitter".

    The ceiling doubles per attempt up to ``cap``; the delay is drawn from [ceiling/2, ceiling], so
    restarts of many children spread out but never come back at once. Deterministic for a seeded rng.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base <= 0:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
