"""Node bootstrap: one actor system, one root supervisor, a tree of child specs; status; clean stop.

    with Node(NodeSetup(children=(ChildSpec(...), ...))).start() as node:
        tree = node.status()          # every supervisor, child, address and OS pid
    # leaving the block: StopTree, ActorSystem shutdown, then no process of the system is left

`Node.start` applies the bind patch (actors.netpatch) before the system exists, starts it
(multiprocTCPBase by default, simpleSystemBase for in-process tests), creates `RootSupervisor` as the
only top-level actor and waits until the whole tree reports ready. `Node.shutdown` asks the root to
stop its tree in order, shuts the actor system down, checks every process the node ever saw is gone
and, as a last resort, SIGKILLs those (identified by pid *and* start time, so never a stranger).

Errors::

    NodeError           base; never raised itself
    └── NodeStartError  Node.start: the system or the tree did not come up (escalated, timed out).
                        The node has already shut down whatever it started; fix the spec or port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

from actors.facade import (
    ActorRuntime,
    ActorRuntimeError,
    Address,
    AskTimeout,
    RuntimeConfig,
    SystemBaseName,
    new_request_id,
)
from domain.supervision import ChildSpec, ChildType, SupervisorFlags
from protocols.control import (
    ChildStatus,
    StopTree,
    SupervisorInit,
    SupervisorState,
    SupervisorStatus,
    SupervisorStatusQuery,
    TreeStopped,
)
from supervisors.processes import (
    ListeningSocket,
    ProcessRef,
    is_alive,
    kill_process,
    listening_sockets,
    process_group_members,
    process_ref,
)
from supervisors.supervisor import ROOT_NAME

__all__ = [
    "Node",
    "NodeError",
    "NodeSetup",
    "NodeStartError",
    "ShutdownReport",
    "SupervisorView",
    "TreeStatus",
]

_log = logging.getLogger("jodo.node")
_ROOT_CLASS = "supervisors.supervisor.RootSupervisor"
_POLL = 0.02  # seconds between polls of a condition (always bounded by a deadline)
#: How often `status` also walks /proc for the members of the node's process group. The walk reads
#: every process's stat file (~10 ms on a busy box); the front door asks the status every second, and
#: the walk was 10-20 % of its process's samples under webhook load (py-spy). `known_processes` and
#: shutdown walk it again anyway, so a process that appears between walks is still found.
_GROUP_SCAN_EVERY_S = 30.0


class NodeError(Exception):
    """Base of the node's errors. Catch a subclass."""


class NodeStartError(NodeError):
    """The node could not start; what it had started is already shut down."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSetup:
    """A node: where its actor system runs, and the root supervisor's flags and children."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    root_flags: SupervisorFlags = field(
        default_factory=lambda: SupervisorFlags(
            intensity=5, period=10.0, backoff_base=0.05, backoff_cap=5.0
        )
    )
    children: tuple[ChildSpec, ...] = ()
    dead_letter_sink: str = ""
    seed: int | None = None
    ready_timeout: float = 30.0
    ask_timeout: float = 5.0
    subtree_ask_timeout: float = 1.0  # a sub-supervisor that just died never answers: do not wait long
    stop_tree_timeout: float = 30.0
    exit_timeout: float = 15.0  # after the system shutdown: how long processes get to vanish


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorView:
    """One supervisor's status and, for each of its supervisor children, theirs.

    ``unreachable``: supervisor children that did not answer (typically just died, their exit not yet
    seen by this supervisor).
    """

    status: SupervisorStatus
    path: str
    subtrees: tuple[SupervisorView, ...]
    unreachable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeStatus:
    root: SupervisorView

    def supervisors(self) -> Iterator[SupervisorView]:
        stack = [self.root]
        while stack:
            view = stack.pop()
            yield view
            stack.extend(view.subtrees)

    @property
    def ready(self) -> bool:
        return all(view.status.ready and not view.unreachable for view in self.supervisors())

    def child(self, path: str) -> ChildStatus:
        """A child by path from the root, e.g. ``"worker"`` or ``"shards/shard-3"``."""
        *parents, leaf = path.split("/")
        view = self.root
        for name in parents:
            view = next(sub for sub in view.subtrees if sub.status.supervisor_id == name)
        return next(child for child in view.status.children if child.id == leaf)

    def pids(self) -> frozenset[int]:
        """Every pid the tree reports: supervisors and their children."""
        found: set[int] = set()
        for view in self.supervisors():
            found.add(view.status.pid)
            found.update(c.pid for c in view.status.children if c.pid is not None)
        return frozenset(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownReport:
    seconds: float
    tree_stopped: bool  # the root confirmed an orderly stop
    killed: tuple[int, ...]  # pids that had to be SIGKILLed
    survivors: tuple[int, ...]  # pids still alive even after that (should be empty)


class Node:
    """An actor system with the root supervisor and its tree. Use `start`, then `shutdown`."""

    def __init__(self, config: NodeSetup) -> None:
        self.config = config
        self._runtime: ActorRuntime | None = None
        self._root: Address | None = None
        self._pgid = 0
        self._known: dict[int, ProcessRef] = {}
        self._group_scanned = -_GROUP_SCAN_EVERY_S

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Node:
        """Start the system and the tree; return once every supervisor reports ready."""
        if self._runtime is not None:
            raise NodeStartError("node already started")
        try:
            self._runtime = ActorRuntime.start(self.config.runtime)
        except ActorRuntimeError as exc:
            raise NodeStartError(str(exc)) from exc
        try:
            self._root = self._runtime.create_root(_ROOT_CLASS, ROOT_NAME)
            self._runtime.tell(
                self._root,
                SupervisorInit(
                    supervisor_id=ROOT_NAME,
                    flags=self.config.root_flags,
                    children=self.config.children,
                    dead_letter_sink=self.config.dead_letter_sink,
                    handle_dead_letters=True,
                    seed=self.config.seed,
                ),
            )
            self.wait_ready(self.config.ready_timeout)
        except (NodeError, ActorRuntimeError) as exc:
            self.shutdown()
            raise NodeStartError(f"tree did not come up: {exc}") from exc
        return self

    def __enter__(self) -> Node:
        return self if self._runtime is not None else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    @property
    def runtime(self) -> ActorRuntime:
        if self._runtime is None:
            raise NodeError("node not started")
        return self._runtime

    @property
    def root(self) -> Address:
        if self._root is None:
            raise NodeError("node not started")
        return self._root

    # ------------------------------------------------------------ status

    def supervisor_status(self, address: Address, timeout: float | None = None) -> SupervisorStatus:
        return self.runtime.ask(
            address,
            SupervisorStatusQuery(request_id=new_request_id()),
            SupervisorStatus,
            self.config.ask_timeout if timeout is None else timeout,
        )

    def status(self) -> TreeStatus:
        """The whole tree, asking each supervisor in turn. Also records every process seen."""
        tree = TreeStatus(root=self._view(self.root, ROOT_NAME, self.config.ask_timeout))
        self._remember(tree)
        return tree

    def _view(self, address: Address, path: str, timeout: float) -> SupervisorView:
        status = self.supervisor_status(address, timeout)
        subtrees: list[SupervisorView] = []
        unreachable: list[str] = []
        for child in status.children:
            if child.type is not ChildType.SUPERVISOR or child.address is None or not child.pid:
                continue
            if self._known_dead(child.pid):
                unreachable.append(child.id)  # killed; its supervisor has not seen the exit yet
                continue
            try:
                sub_timeout = self.config.subtree_ask_timeout
                subtrees.append(self._view(child.address, f"{path}/{child.id}", sub_timeout))
            except AskTimeout:
                unreachable.append(child.id)
        return SupervisorView(
            status=status, path=path, subtrees=tuple(subtrees), unreachable=tuple(unreachable)
        )

    def wait_ready(self, timeout: float) -> TreeStatus:
        """Poll the tree until it is ready; `NodeError` on escalation or at the deadline."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                tree = self.status()
            except ActorRuntimeError as exc:
                last = str(exc)
            else:
                if tree.root.status.state is SupervisorState.ESCALATED:
                    raise NodeError("root supervisor escalated while starting (see the log)")
                if tree.ready:
                    return tree
                last = f"root {tree.root.status.state.value}"
            if time.monotonic() >= deadline:
                raise NodeError(f"not ready after {timeout} s ({last})")
            time.sleep(_POLL)

    # ------------------------------------------------------------ processes

    @property
    def in_process(self) -> bool:
        return self.config.runtime.base is SystemBaseName.SIMPLE

    def _remember(self, tree: TreeStatus) -> None:
        if self.in_process:
            return  # every "actor" is this process: nothing to track, nothing ever to kill
        root = tree.root.status
        if not self._pgid:
            self._pgid = root.pgid
            self._reap(root.pgid)  # thespian's double fork leaves the first child as our zombie
        pids = {*tree.pids(), root.ppid}  # the admin is the root's parent
        for pid in pids:
            if pid in self._known or pid == os.getpid():
                continue
            ref = process_ref(pid)
            if ref is not None:
                self._known[pid] = ref
        if time.monotonic() - self._group_scanned >= _GROUP_SCAN_EVERY_S:
            self._group_scanned = time.monotonic()
            for ref in process_group_members(self._pgid):
                self._known.setdefault(ref.pid, ref)

    def _known_dead(self, pid: int) -> bool:
        ref = self._known.get(pid)
        return ref is not None and not is_alive(ref)

    def known_processes(self) -> tuple[ProcessRef, ...]:
        """Every process of this node's actor system seen so far (admin, logger, actors)."""
        if not self.in_process and self._pgid:
            for ref in process_group_members(self._pgid):
                self._known.setdefault(ref.pid, ref)
        return tuple(self._known.values())

    def live_processes(self) -> tuple[ProcessRef, ...]:
        return tuple(ref for ref in self.known_processes() if is_alive(ref))

    def listening_sockets(self) -> list[ListeningSocket]:
        """Every TCP listener of the system's processes, plus this process's own endpoint socket."""
        found = listening_sockets([ref.pid for ref in self.live_processes()])
        own = self.runtime.endpoint_sockname()
        if own is not None:
            found.append(ListeningSocket(pid=os.getpid(), host=own[0], port=own[1]))
        return found

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # ------------------------------------------------------------ shutdown

    def shutdown(self) -> ShutdownReport:
        """Stop the tree in order, shut the system down, make sure none of its processes is left."""
        began = time.monotonic()
        runtime = self._runtime
        if runtime is None:
            return ShutdownReport(seconds=0.0, tree_stopped=False, killed=(), survivors=())
        tree_stopped = False
        if self._root is not None:
            with contextlib.suppress(ActorRuntimeError, NodeError):
                self.status()  # remember every process before asking them to go
            request = StopTree(request_id=new_request_id())
            try:
                runtime.ask(self._root, request, TreeStopped, self.config.stop_tree_timeout)
                tree_stopped = True
            except ActorRuntimeError as exc:
                _log.warning("root did not confirm an orderly stop: %s", exc)
        self._runtime = None
        try:
            runtime.shutdown()
        finally:
            killed, survivors = self._await_exit() if not self.in_process else ((), ())
        return ShutdownReport(
            seconds=time.monotonic() - began,
            tree_stopped=tree_stopped,
            killed=killed,
            survivors=survivors,
        )

    def _await_exit(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not self._known and not self._pgid:
            return (), ()
        if self._wait_gone(self.config.exit_timeout):
            return (), ()
        killed = tuple(ref.pid for ref in self.live_processes() if kill_process(ref))
        _log.error("actor processes outlived the shutdown, SIGKILLed: %s", killed)
        self._wait_gone(5.0)
        survivors = tuple(ref.pid for ref in self.live_processes())
        return killed, survivors

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self.live_processes():
                self._reap(self._pgid)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
