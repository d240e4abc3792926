"""The generic Supervisor actor: OTP supervision over Thespian, policy from `domain.supervision`.

Configured by its first message, `protocols.control.SupervisorInit` (flags + child specs). It:

- creates each child (``createActor``) and sends it the spec's init; a child is *running* once it
  answers `ChildStarted` (with its pid); the supervisor tells its own parent `ChildStarted` once every
  child is running, so the root being ready means the whole tree is;
- on ``ChildActorExited`` applies the pure policy: `should_restart`, `add_restart` (intensity/period),
  `restart_plan` (siblings stopped in reverse start order, one at a time, each within its spec's
  shutdown time or SIGKILLed, then started again in start order), `backoff_delay` between restarts;
- escalates when intensity is exceeded: stops its children and exits, so its parent sees a crash; the
  `RootSupervisor` instead stops its children and stays up, reporting ``escalated``;
- hands every PoisonMessage (and, when registered, every dead letter) to a `DeadLetterSink`;
- answers `SupervisorStatusQuery`, and tells subscribers (`SubscribeChildAddresses`) each child's new
  address after every (re)start;
- on `StopTree` stops its children in reverse start order, answers `TreeStopped` and exits.

Timers: one ``wakeupAfter`` tick at a time (Thespian's own timers are O(n^2)); deadlines sit in this
actor's heap (entries no longer backed by a child's state are dropped, so an idle supervisor has no
tick), and the tick is capped at `TICK_MAX` so a deadline added later is never late by more.
Handlers do their fallible work (imports, init factories) before changing any state: Thespian re-runs
a handler that raised, keeping whatever it had already changed.
"""

from __future__ import annotations

import heapq
import importlib
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from actors.facade import Address
from domain.supervision import (
    ChildSpec,
    ChildType,
    ExitReason,
    InitFactory,
    IntensityExceeded,
    add_restart,
    auto_shutdown_triggered,
    backoff_delay,
    restart_plan,
    should_restart,
)
from protocols.control import (
    ChildAddressChanged,
    ChildStart,
    ChildStarted,
    ChildState,
    ChildStatus,
    ChildStopping,
    StopTree,
    SubscribeChildAddresses,
    SupervisorInit,
    SupervisorState,
    SupervisorStatus,
    SupervisorStatusQuery,
    TreeStopped,
    UnsubscribeChildAddresses,
)
from supervisors.child import SupervisedChild, started_message
from supervisors.deadletters import (
    DeadLetterEvent,
    DeadLetterKind,
    DeadLetterSink,
    LoggingDeadLetterSink,
    load_sink,
)
from supervisors.processes import ProcessRef, boot_id, is_alive, kill_process
from telemetry import metrics

__all__ = ["ROOT_NAME", "TICK_MAX", "RootSupervisor", "Supervisor"]

ROOT_NAME = "jodo-root"
TICK_MAX = 0.05  # seconds: the longest one tick sleeps, so a deadline added later is late by <= this
KILL_GRACE = 2.0  # seconds to see ChildActorExited after a SIGKILL before giving up on a child
#: Seconds between checks that every running child's process is still there. Thespian can miss a
#: child's death when two children of one parent die together (its SIGCHLD flag is cleared after the
#: liveness scan, so a second signal during the scan is lost; seen here as a SIGKILLed shard that was
#: never reported): a supervisor must not depend on ChildActorExited alone.
LIVENESS_PERIOD = 0.5
_TICK = "jodo-supervisor-tick"
_LIVE = (ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING)
def _log() -> logging.Logger:
    # Looked up per use: Thespian replaces the logging tree in each actor process after fork, and a
    # logger cached at import (in the starting process) would bypass the system's log handlers.
    return logging.getLogger("jodo.supervisor")


@dataclass(frozen=True, slots=True)
class _Exited:
    """Stands in for Thespian's ChildActorExited when the liveness sweep finds a dead child."""

    childAddress: Any  # Thespian's spelling


def _metric(name: str, *args: Any) -> None:
    """Call ``telemetry.metrics.<name>``; metrics never take a supervisor down."""
    try:
        getattr(metrics, name)(*args)
    except Exception:
        _log().warning("metric %s%r failed", name, args, exc_info=True)


class _Timer(StrEnum):
    START = "start"  # a RESTART_PENDING child's backoff ends
    STOP = "stop"  # a STOPPING child's shutdown time (or kill grace) ends
    NUDGE = "nudge"  # shortly after a start: see _start_child
    LIVENESS = "liveness"  # look for children that died without Thespian telling us


@dataclass(frozen=True, slots=True, kw_only=True)
class _Child:
    spec: ChildSpec
    state: ChildState = ChildState.RESTART_PENDING
    address: Address | None = None
    started: ChildStarted | None = None
    starts: int = 0
    exit_reason: ExitReason | None = None  # said before the exit, by the child or by us
    after_stop: ChildState = ChildState.ENDED  # where a STOPPING child goes once it has exited
    start_due: float = 0.0
    stop_deadline: float = 0.0
    killed: bool = False
    recent_failures: tuple[float, ...] = ()  # this child's own, for its backoff attempt number

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)


def _resolve(path: str, sep: str) -> Any:
    module, _, name = path.rpartition(sep)
    return getattr(importlib.import_module(module), name)


class Supervisor(SupervisedChild):
    """A supervisor of any actor kinds; see the module docstring. Configure with `SupervisorInit`."""

    is_root = False

    def __init__(self) -> None:
        super().__init__()
        self._config: SupervisorInit | None = None
        self._children: dict[str, _Child] = {}
        self._window: tuple[float, ...] = ()
        self._by_kind: dict[str, int] = {}
        self._stop_queue: tuple[str, ...] = ()
        self._stopping_tree = False
        self._exit_when_stopped = True
        self._announce_stop = True
        self._stop_requests: tuple[tuple[Address, str], ...] = ()
        self._escalated = False
        self._exiting = False
        self._announced = False
        self._subscribers: tuple[tuple[Address, tuple[str, ...]], ...] = ()
        self._sink: DeadLetterSink = LoggingDeadLetterSink()
        self._rng = random.Random()
        self._timers: list[tuple[float, _Timer]] = []
        self._tick_armed = False
        self._boot_id = boot_id()
        self._next_sweep = 0.0

    # ------------------------------------------------------------ configuration

    def receiveMsg_SupervisorInit(self, msg: SupervisorInit, sender: Address) -> None:
        if self._config is not None:
            _log().warning("%s: second SupervisorInit ignored", self._config.supervisor_id)
            return
        now = time.monotonic()
        problem = ""
        sink: DeadLetterSink = LoggingDeadLetterSink()
        try:
            sink = load_sink(msg.dead_letter_sink)
            for spec in msg.children:
                _resolve(spec.start, ".")
                if isinstance(spec.init, InitFactory):
                    _resolve(spec.init.path, ":")
        except Exception as exc:  # a typo in a tree spec: fail like supervisor.erl's init/1
            problem = f"bad child spec or sink: {exc!r}"
        self.link_to_parent_process()
        self._config = msg
        self.supervisor = None if self.is_root else sender
        self._sink = sink
        self._rng = random.Random(msg.seed)
        self._children = {spec.id: _Child(spec=spec, start_due=now) for spec in msg.children}
        if msg.handle_dead_letters or self.is_root:
            self.register_for_dead_letters()
        if problem:
            self._escalate(problem, now)
        self._advance(now)

    # ------------------------------------------------------------ children reporting

    def receiveMsg_ChildStarted(self, msg: ChildStarted, sender: Address) -> None:
        cid = self._find(sender, _LIVE)
        if cid is None:
            return
        child = self._children[cid]
        state = ChildState.RUNNING if child.state is ChildState.STARTING else child.state
        self._children = {**self._children, cid: replace(child, state=state, started=msg)}
        if state is ChildState.RUNNING:
            self._notify_subscribers(cid)
        self._advance(time.monotonic())

    def receiveMsg_ChildStopping(self, msg: ChildStopping, sender: Address) -> None:
        cid = self._find(sender, _LIVE)
        if cid is not None and self._children[cid].exit_reason is None:
            self._children = {
                **self._children,
                cid: replace(self._children[cid], exit_reason=msg.reason),
            }

    def receiveMsg_ChildActorExited(self, msg: Any, sender: Address) -> None:
        cid = self._find(msg.childAddress, _LIVE)
        if cid is None:
            # a child we gave up on or replaced, or a re-run of this handler after a raise:
            # advancing is idempotent and re-arms the tick if the first run could not
            self._advance(time.monotonic())
            return
        child = self._children[cid]
        if child.started is not None:
            _metric("mark_dead", child.started.pid)  # its live gauges go; its counters keep counting
        gone = replace(child, address=None, started=None, stop_deadline=0.0, killed=False)
        if self._exiting:
            self._children = {**self._children, cid: replace(gone, state=ChildState.ENDED)}
            return
        now = time.monotonic()
        if child.state is ChildState.STOPPING:
            self._children = {**self._children, cid: replace(gone, state=child.after_stop)}
        else:
            reason = child.exit_reason or ExitReason.ABNORMAL
            _log().info("%s: child %s exited (%s)", self._name, cid, reason.value)
            self._children = {**self._children, cid: gone}
            self._on_exit(cid, reason, now)
        self._advance(now)

    def receiveMsg_TreeStopped(self, msg: TreeStopped, sender: Address) -> None:
        pass  # a supervisor child we stopped confirms; its ChildActorExited follows

    # ------------------------------------------------------------ control

    def receiveMsg_StopTree(self, msg: StopTree, sender: Address) -> None:
        now = time.monotonic()
        self._stop_requests = (*self._stop_requests, (sender, msg.request_id))
        self._begin_stop_tree(exit_when_done=True, announce=True, now=now)
        self._advance(now)

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        # Thespian itself now stops our children and exits: no restarts from here on.
        self._exiting = True

    def receiveMsg_SupervisorStatusQuery(self, msg: SupervisorStatusQuery, sender: Address) -> None:
        self.tell(sender, self._status(msg.request_id))

    def receiveMsg_SubscribeChildAddresses(
        self, msg: SubscribeChildAddresses, sender: Address
    ) -> None:
        kept = tuple(s for s in self._subscribers if s[0] != sender)
        self._subscribers = (*kept, (sender, msg.child_ids))
        for cid, child in self._children.items():
            if child.state is ChildState.RUNNING and (not msg.child_ids or cid in msg.child_ids):
                self.tell(sender, self._address_message(cid, child))

    def receiveMsg_UnsubscribeChildAddresses(
        self, msg: UnsubscribeChildAddresses, sender: Address
    ) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s[0] != sender)

    def receiveMsg_WakeupMessage(self, msg: Any, sender: Address) -> None:
        if msg.payload != _TICK:
            return
        self._tick_armed = False
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + LIVENESS_PERIOD
            for cid in self._silently_dead():
                child = self._children[cid]
                _log().warning("%s: child %s (pid %s) is gone but no exit was reported; handling it",
                               self._name, cid, child.started.pid if child.started else "?")
                self.receiveMsg_ChildActorExited(_Exited(child.address), self.address)
        self._advance(now)

    def _silently_dead(self) -> list[str]:
        """Children whose process has ended (or is a zombie) though Thespian said nothing."""
        if not self.runs_in_own_process():
            return []
        dead = []
        for cid, child in self._children.items():
            started = child.started
            if child.state not in _LIVE or started is None or child.address is None:
                continue
            if started.boot_id and started.boot_id != self._boot_id:
                continue  # another host's process: its liveness is not ours to read
            if not is_alive(ProcessRef(pid=started.pid, start_time=started.start_time)):
                dead.append(cid)
        return dead

    # ------------------------------------------------------------ dead letters

    def receiveMsg_PoisonMessage(self, msg: Any, sender: Address) -> None:
        poison = msg.poisonMessage
        self._record(DeadLetterKind.POISON, poison, sender, str(msg.details or ""))
        cid = self._find(sender, (ChildState.STARTING,))
        if cid is not None:
            # The child raised on its init: it is alive but useless. Stop it; the exit is a crash.
            _log().error("%s: child %s failed on its init", self._name, cid)
            self.ask_to_exit(sender)

    def receiveMsg_DeadEnvelope(self, msg: Any, sender: Address) -> None:
        dead = msg.deadAddress
        if isinstance(msg.deadMessage, ChildAddressChanged):
            self._subscribers = tuple(s for s in self._subscribers if not _same(s[0], dead))
            return
        self._record(DeadLetterKind.UNDELIVERABLE, msg.deadMessage, dead, "target gone")

    def _record(self, kind: DeadLetterKind, message: object, target: object, details: str) -> None:
        letter = DeadLetterEvent(
            kind=kind,
            message=message,
            message_type=type(message).__name__,
            target=str(target),
            details=details,
            at=time.time(),
        )
        try:
            self._sink.record(letter)
        except Exception:  # a failing sink must not turn into a restart loop of the supervisor
            _log().exception("%s: dead-letter sink failed", self._name)

    # ------------------------------------------------------------ policy

    def _on_exit(self, cid: str, reason: ExitReason, now: float) -> None:
        """A child ended on its own: restart it (and siblings per strategy), end it, or escalate."""
        assert self._config is not None
        flags, specs = self._config.flags, self._config.children
        child = self._children[cid]
        if self._stopping_tree or self._escalated or not should_restart(child.spec.restart, reason):
            children = {**self._children, cid: replace(child, state=ChildState.ENDED)}
            self._children = children
            remaining = [c for c, ch in children.items() if ch.state is not ChildState.ENDED]
            if not self._stopping_tree and auto_shutdown_triggered(flags, specs, cid, remaining):
                self._begin_stop_tree(exit_when_done=True, announce=True, now=now)
            return
        window = add_restart(self._window, now, flags)
        if isinstance(window, IntensityExceeded):
            self._children = {**self._children, cid: replace(child, state=ChildState.ENDED)}
            self._escalate(
                f"{len(window.restarts)} restarts in {window.period} s"
                f" exceed intensity {window.intensity} (last: {cid})",
                now,
            )
            return
        plan = restart_plan(specs, cid, flags.strategy)
        _metric("actor_restarted", child.spec.kind)
        # One flapping child backs off further each time; its healthy siblings are not slowed.
        recent = (*(t for t in child.recent_failures if t >= now - flags.period), now)
        attempt = len(recent) - 1
        due = now + backoff_delay(attempt, flags.backoff_base, flags.backoff_cap, self._rng)
        children = dict(self._children)
        children[cid] = replace(
            child, state=ChildState.RESTART_PENDING, start_due=due, recent_failures=recent
        )
        queue = list(self._stop_queue)
        for sid in plan.stop:
            sibling = children[sid]
            after = ChildState.RESTART_PENDING if sid in plan.start else ChildState.ENDED
            if sibling.state in (ChildState.RUNNING, ChildState.STARTING):
                children[sid] = replace(sibling, after_stop=after, start_due=due)
                if sid not in queue:
                    queue.append(sid)
            elif sibling.state in (ChildState.STOPPING, ChildState.RESTART_PENDING):
                children[sid] = replace(sibling, start_due=max(sibling.start_due, due))
        self._window = window
        self._children = children
        self._stop_queue = tuple(queue)
        heapq.heappush(self._timers, (due, _Timer.START))

    def _escalate(self, why: str, now: float) -> None:
        _log().error("%s: escalating: %s", self._name, why)
        self._escalated = True
        # A non-root supervisor exits without ChildStopping, so its parent counts a crash.
        self._begin_stop_tree(exit_when_done=not self.is_root, announce=False, now=now)

    def _begin_stop_tree(self, *, exit_when_done: bool, announce: bool, now: float) -> None:
        children = dict(self._children)
        for cid, child in children.items():
            if child.state is ChildState.RESTART_PENDING:
                children[cid] = replace(child, state=ChildState.ENDED)
            elif child.state in _LIVE:
                children[cid] = replace(child, after_stop=ChildState.ENDED)
        live = [cid for cid, child in children.items() if child.state in _LIVE]
        self._children = children
        self._stop_queue = tuple(reversed(live))
        self._exit_when_stopped = self._exit_when_stopped and exit_when_done
        self._announce_stop = self._announce_stop and announce
        self._stopping_tree = True

    # ------------------------------------------------------------ doing it

    def _advance(self, now: float) -> None:
        """Move every child as far as the clock allows: stops first (one at a time), then starts."""
        for _ in range(4 * len(self._children) + 8):
            if not self._step(now):
                break
        self._check_ready()
        self._arm(now)

    def _step(self, now: float) -> bool:
        """Do one thing that is due; return whether anything was done."""
        if self._config is None:
            return False
        while self._stop_queue:
            head = self._stop_queue[0]
            child = self._children[head]
            if child.state in (ChildState.RUNNING, ChildState.STARTING):
                self._send_stop(head, child, now)
                return True
            if child.state is not ChildState.STOPPING:
                self._stop_queue = self._stop_queue[1:]
                continue
            if now < child.stop_deadline:
                return False
            self._overrun(head, child, now)
            return True
        if self._stopping_tree:
            if not any(child.state in _LIVE for child in self._children.values()):
                self._finish_stop_tree()
            return False
        for cid, child in self._children.items():
            if child.state is ChildState.RESTART_PENDING and child.start_due <= now:
                self._start_child(cid, child, now)
                return True
        return False

    def _send_stop(self, cid: str, child: _Child, now: float) -> None:
        deadline = now + child.spec.shutdown
        self._children = {
            **self._children,
            cid: replace(
                child,
                state=ChildState.STOPPING,
                exit_reason=ExitReason.SHUTDOWN,
                stop_deadline=deadline,
            ),
        }
        heapq.heappush(self._timers, (deadline, _Timer.STOP))
        assert child.address is not None
        if child.spec.type is ChildType.SUPERVISOR:
            self.tell(child.address, StopTree())
        else:
            self.ask_to_exit(child.address)

    def _overrun(self, cid: str, child: _Child, now: float) -> None:
        """A child outlived its shutdown time: kill it (OTP brutal_kill), or give up on it."""
        if not child.killed and self._killable(child):
            assert child.started is not None
            ref = ProcessRef(pid=child.started.pid, start_time=child.started.start_time)
            if kill_process(ref):
                _log().warning("%s: child %s overran its shutdown, killed", self._name, cid)
            deadline = now + KILL_GRACE
            heapq.heappush(self._timers, (deadline, _Timer.STOP))
            self._children = {
                **self._children,
                cid: replace(child, killed=True, stop_deadline=deadline),
            }
            return
        _log().error("%s: child %s did not exit; giving up on it", self._name, cid)
        gone = replace(child, state=child.after_stop, address=None, started=None, killed=False)
        self._children = {**self._children, cid: gone}
        self._stop_queue = self._stop_queue[1:]

    def _killable(self, child: _Child) -> bool:
        """Only a process of our own actor system on this very host, and never ourselves."""
        started = child.started
        return (
            started is not None
            and started.pid != os.getpid()
            and started.pgid == os.getpgid(0)
            and started.start_time > 0
            and bool(started.boot_id)
            and started.boot_id == self._boot_id
        )

    def _start_child(self, cid: str, child: _Child, now: float) -> None:
        spec = child.spec
        try:
            init = self._init_message(spec, child.starts)
            address = self.spawn(spec.start)
        except Exception:
            _log().exception("%s: could not start child %s", self._name, cid)
            self._on_exit(cid, ExitReason.ABNORMAL, now)
            return
        if child.starts:
            _metric("forget_dead_processes")  # gauges of processes no one saw die (a killed subtree)
            self._by_kind = {**self._by_kind, spec.kind: self._by_kind.get(spec.kind, 0) + 1}
        self._children = {
            **self._children,
            cid: replace(
                child,
                state=ChildState.STARTING,
                address=address,
                started=None,
                starts=child.starts + 1,
                exit_reason=None,
                after_stop=ChildState.ENDED,
                killed=False,
            ),
        }
        self.tell(address, init)
        # A send made from a wakeup handler can stall until the next message arrives (THESPIAN.md):
        # one more tick shortly after guarantees that next message.
        heapq.heappush(self._timers, (now + TICK_MAX, _Timer.NUDGE))

    def _init_message(self, spec: ChildSpec, restarts: int) -> object:
        if spec.init is None:
            return ChildStart(child_id=spec.id)
        if isinstance(spec.init, InitFactory):
            return _resolve(spec.init.path, ":")(spec, restarts)
        return spec.init

    def _finish_stop_tree(self) -> None:
        requests, self._stop_requests = self._stop_requests, ()
        for requester, request_id in requests:
            self.tell(requester, TreeStopped(request_id=request_id, supervisor_id=self._name))
        if self._exit_when_stopped and not self._exiting:
            self._exiting = True
            if self._announce_stop and self.supervisor is not None:
                self.tell(self.supervisor, ChildStopping(reason=ExitReason.SHUTDOWN))
            self.exit_self()

    def _check_ready(self) -> None:
        if self._announced or not self._ready():
            return
        self._announced = True
        if self.supervisor is not None:
            self.tell(self.supervisor, started_message())

    def _ready(self) -> bool:
        return (
            self._config is not None
            and not (self._escalated or self._stopping_tree or self._stop_queue)
            and all(
                child.state in (ChildState.RUNNING, ChildState.ENDED)
                for child in self._children.values()
            )
        )

    def _arm(self, now: float) -> None:
        if not any(kind is _Timer.LIVENESS for _, kind in self._timers) and self._timer_valid(
            now, _Timer.LIVENESS
        ):
            heapq.heappush(self._timers, (max(now + 0.01, self._next_sweep), _Timer.LIVENESS))
        while self._timers and (self._timers[0][0] <= now or not self._timer_valid(*self._timers[0])):
            heapq.heappop(self._timers)
        if self._timers and not self._tick_armed:
            self._tick_armed = True
            self.wake_after(min(self._timers[0][0] - now, TICK_MAX), _TICK)

    def _timer_valid(self, at: float, kind: _Timer) -> bool:
        """Whether a heap entry still stands for something a child is waiting on."""
        children = self._children.values()
        if kind is _Timer.START:
            return any(c.state is ChildState.RESTART_PENDING and c.start_due == at for c in children)
        if kind is _Timer.STOP:
            return any(c.state is ChildState.STOPPING and c.stop_deadline == at for c in children)
        if kind is _Timer.LIVENESS:
            return any(c.state in _LIVE and c.started is not None for c in children)
        return any(c.state is ChildState.STARTING for c in children)

    # ------------------------------------------------------------ reporting

    @property
    def _name(self) -> str:
        return self._config.supervisor_id if self._config is not None else "supervisor"

    def _find(self, address: Any, states: Iterable[ChildState]) -> str | None:
        wanted = tuple(states)
        for cid, child in self._children.items():
            if child.state in wanted and child.address is not None and child.address == address:
                return cid
        return None

    def _address_message(self, cid: str, child: _Child) -> ChildAddressChanged:
        assert child.address is not None
        return ChildAddressChanged(
            supervisor_id=self._name, child_id=cid, address=child.address, generation=child.restarts
        )

    def _notify_subscribers(self, cid: str) -> None:
        message = self._address_message(cid, self._children[cid])
        for subscriber, wanted in self._subscribers:
            if not wanted or cid in wanted:
                self.tell(subscriber, message)

    def _state(self) -> SupervisorState:
        if self._escalated:
            return SupervisorState.ESCALATED
        if self._stopping_tree or self._exiting:
            return SupervisorState.STOPPING
        if not self._announced and not self._ready():
            return SupervisorState.STARTING
        if self._stop_queue or any(
            c.state is not ChildState.RUNNING and c.state is not ChildState.ENDED
            for c in self._children.values()
        ):
            return SupervisorState.RESTARTING
        return SupervisorState.RUNNING

    def _status(self, request_id: str) -> SupervisorStatus:
        children = tuple(
            ChildStatus(
                id=cid,
                kind=child.spec.kind,
                type=child.spec.type,
                state=child.state,
                address=child.address,
                pid=child.started.pid if child.started is not None else None,
                restarts=child.restarts,
            )
            for cid, child in self._children.items()
        )
        return SupervisorStatus(
            request_id=request_id,
            supervisor_id=self._name,
            address=self.address,
            pid=os.getpid(),
            ppid=os.getppid(),
            pgid=os.getpgid(0),
            state=self._state(),
            ready=self._ready(),
            children=children,
            restarts_by_kind=tuple(sorted(self._by_kind.items())),
            dead_letters=self._sink.count(),
        )


def _same(address: Any, other: Any) -> bool:
    """DeadEnvelope names the dead target by address (multiproc) or by address string (simple)."""
    if address == other:
        return True
    return isinstance(other, str) and getattr(address, "actorAddressString", None) == other


class RootSupervisor(Supervisor):
    """The only top-level actor (global name `ROOT_NAME`). Registers for dead letters; on escalation it
    stops its children and stays up, reporting ``escalated``, since nobody supervises it."""

    is_root = True

