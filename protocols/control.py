"""Supervision control messages: how supervisors configure, watch and stop their children.

These never leave one actor system: they carry Thespian actor addresses and child specs (whose
``init`` may be any picklable message), so Thespian pickles them and they have no msgpack form.
Every class prints in O(1) (`protocols.wire.Carrier`).

The child side of the contract, for any actor kind a supervisor starts:

1. its first message is the spec's ``init`` (or `ChildStart` when the spec has none); after handling
   it, the child replies to the sender (its supervisor) with `ChildStarted` carrying ``os.getpid()``;
2. to end on purpose it first tells its supervisor `ChildStopping`, then exits; any other exit is a
   crash (Thespian's ``ChildActorExited`` carries no reason);
3. a supervisor child (`domain.supervision.ChildType.SUPERVISOR`) also answers `StopTree`.

``supervisors.child.SupervisedChild`` implements 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from domain.supervision import ChildSpec, ChildType, ExitReason, SupervisorFlags
from protocols.wire import Carrier

__all__ = [
    "Address",
    "ChildAddressChanged",
    "ChildStart",
    "ChildStarted",
    "ChildState",
    "ChildStatus",
    "ChildStopping",
    "StopTree",
    "SubscribeChildAddresses",
    "SupervisorInit",
    "SupervisorState",
    "SupervisorStatus",
    "SupervisorStatusQuery",
    "TreeStopped",
    "UnsubscribeChildAddresses",
]


class Address(Protocol):
    """A Thespian ``ActorAddress``, typed by what jodo reads from it (it is opaque otherwise)."""

    @property
    def actorAddressString(self) -> str: ...  # Thespian spells it so


class SupervisorState(StrEnum):
    STARTING = "starting"  # children created, not all reported ChildStarted
    RUNNING = "running"
    RESTARTING = "restarting"  # stopping siblings or waiting out a backoff
    STOPPING = "stopping"  # StopTree or ActorExitRequest received
    ESCALATED = "escalated"  # intensity exceeded (the root stays up to report it)


class ChildState(StrEnum):
    STARTING = "starting"  # created and sent its init, no ChildStarted yet
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop, exit not seen yet
    RESTART_PENDING = "restart_pending"  # gone, waiting for siblings to stop or for its backoff
    ENDED = "ended"  # gone for good (temporary, or transient after a normal exit)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SupervisorInit(Carrier):
    """First message of every Supervisor: its flags and children, in start order.

    ``dead_letter_sink`` names a zero-argument factory ``"module:callable"`` returning a
    ``supervisors.deadletters.DeadLetterSink`` (empty: log and count). ``handle_dead_letters`` registers
    the supervisor for Thespian's dead letters: set it on one supervisor per system (the root), since
    every registered actor receives every dead letter. ``seed`` seeds the backoff jitter.
    """

    supervisor_id: str
    flags: SupervisorFlags
    children: tuple[ChildSpec, ...] = ()
    dead_letter_sink: str = ""
    handle_dead_letters: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        ids = [spec.id for spec in self.children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.supervisor_id}: child ids must be unique, got {ids}")


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ChildStart(Carrier):
    """The init a supervisor sends a child whose spec has no ``init``."""

    child_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ChildStarted(Carrier):
    """Child → its supervisor, after handling its init: it is up, and this is its process.

    ``pgid``, ``boot_id`` and ``start_time`` let a supervisor on the same host and actor system kill the
    process when it overruns its shutdown time. A supervisor sends this to its own parent once its whole
    subtree is up.
    """

    pid: int
    pgid: int = 0
    boot_id: str = ""
    start_time: int = 0  # the kernel's start time of ``pid``: tells it from a later process reusing it


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ChildStopping(Carrier):
    """Child → its supervisor, just before exiting on purpose (so its exit is not a crash)."""

    reason: ExitReason = ExitReason.NORMAL


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class StopTree(Carrier):
    """Stop every child in reverse start order (each within its spec's shutdown time), then exit.

    The supervisor answers `TreeStopped` with the same ``request_id`` just before it exits.
    """

    request_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class TreeStopped(Carrier):
    request_id: str
    supervisor_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SupervisorStatusQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ChildStatus(Carrier):
    """One child as its supervisor sees it. ``pid`` is None until the child reported `ChildStarted`."""

    id: str
    kind: str
    type: ChildType
    state: ChildState
    address: Address | None
    pid: int | None
    restarts: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SupervisorStatus(Carrier):
    """Answer to `SupervisorStatusQuery`: this supervisor and its direct children.

    Walk the tree by asking each child of type supervisor in turn (``jodo.node.Node.status`` does).
    ``ready``: every child is running and has reported its process. ``restarts_by_kind`` counts
    restarts per child class since this supervisor started.
    """

    request_id: str
    supervisor_id: str
    address: Address
    pid: int
    ppid: int
    pgid: int
    state: SupervisorState
    ready: bool
    children: tuple[ChildStatus, ...]
    restarts_by_kind: tuple[tuple[str, int], ...]
    dead_letters: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SubscribeChildAddresses(Carrier):
    """Ask a supervisor to send the sender a `ChildAddressChanged` for each child now running and again
    after every (re)start. Empty ``child_ids``: all children."""

    child_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class UnsubscribeChildAddresses(Carrier):
    pass


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ChildAddressChanged(Carrier):
    """A child's current address. ``generation`` counts its restarts: ignore one older than you hold."""

    supervisor_id: str
    child_id: str
    address: Address
    generation: int
