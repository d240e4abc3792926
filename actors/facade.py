"""The one typed facade over Thespian's untyped calls: start a system, create the root, tell, ask, stop.

Everything Any-typed from thespian stays in this module. Outside code uses:

- `ActorRuntime.start(RuntimeConfig(...))`: a multiprocTCPBase system on a loopback interface and a
  given admin port (bind patch applied first, ``THESPIAN_BASE_IPADDR`` set, the admin's stdio pointed at
  a log file or /dev/null), or simpleSystemBase for in-process tests;
- `ActorRuntime.create_root`, `tell`, `ask` (request ids: late replies to earlier asks are dropped),
  `shutdown`;
- `TypedActor`: a typed base for jodo's actors (send, create a child, one timer, exit).

Errors::

    ActorRuntimeError       base; never raised itself
    ├── RuntimeStartError   ActorRuntime.start: the admin port is taken or the system did not come up.
    │                       Pick another port, or stop what holds it (never join a stranger's admin).
    ├── AskTimeout          ActorRuntime.ask: no matching reply before the deadline. Retry or report;
    │                       a late reply will be dropped by the next ask.
    └── AskFailed           ActorRuntime.ask: the target raised on the request (PoisonMessage) or
                            answered with an unexpected type. A bug in the target: report it.
    BindPatchError          (actors.netpatch) the bind patch cannot be proven right: do not start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from thespian.actors import ActorExitRequest, ActorSystem, ActorTypeDispatcher, PoisonMessage

from actors.netpatch import BindPatchError, apply_bind_patch, apply_peer_allowlist
from actors.sendpatch import apply_send_patch
from protocols.control import Address

__all__ = [
    "ActorRuntime",
    "ActorRuntimeError",
    "Address",
    "AskFailed",
    "AskTimeout",
    "BindPatchError",
    "RuntimeConfig",
    "RuntimeStartError",
    "SystemBaseName",
    "Tagged",
    "TypedActor",
    "new_request_id",
    "port_is_free",
]

_log = logging.getLogger("jodo.runtime")
R = TypeVar("R")


class ActorRuntimeError(Exception):
    """Base of the facade's errors. Catch a subclass."""


class RuntimeStartError(ActorRuntimeError):
    """`ActorRuntime.start` could not bring a system up; nothing of it is left running."""


class AskTimeout(ActorRuntimeError):
    """No reply with the request's id arrived in time."""


class AskFailed(ActorRuntimeError):
    """The target raised on the request (Thespian returned it as PoisonMessage) or answered oddly."""


class SystemBaseName(StrEnum):
    MULTIPROC_TCP = "multiprocTCPBase"
    SIMPLE = "simpleSystemBase"  # one thread, in-process: tests only (no copies, no timeouts)


class Tagged(Protocol):
    """A request that carries an id its reply repeats."""

    @property
    def request_id(self) -> str: ...


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    """How to start an actor system. ``ip`` is advertised *and* bound (see actors.netpatch).

    ``log_file``: where the system's logging, thesplog and stray stdout/stderr go (None: logging to
    stderr of the admin, which is /dev/null). ``capabilities`` are extra Thespian capabilities
    (a convention address, placement tags).
    """

    base: SystemBaseName = SystemBaseName.MULTIPROC_TCP
    ip: str = "127.0.0.1"
    admin_port: int = 1900
    log_level: str = "WARNING"
    log_file: Path | None = None
    capabilities: Mapping[str, object] = field(default_factory=dict)
    # addresses (besides ``ip`` and 127.0.0.1) whose connections the actor sockets accept
    peers: tuple[str, ...] = ()


def port_is_free(ip: str, port: int) -> bool:
    """Whether nothing listens on ``ip:port`` (so starting a system there will not join a stranger)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((ip, port)) != 0


def _logging_dict(config: RuntimeConfig) -> dict[str, Any]:
    """A real dictConfig for the system's logger process (``logDefs=False`` breaks multiproc starts)."""
    if config.base is SystemBaseName.SIMPLE:
        # In-process: leave the host's logging (pytest's capture, say) alone.
        return {"version": 1, "disable_existing_loggers": False}
    handler: dict[str, Any] = (
        {"class": "logging.FileHandler", "filename": str(config.log_file), "formatter": "plain"}
        if config.log_file is not None
        else {"class": "logging.StreamHandler", "formatter": "plain"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"out": handler},
        "root": {"level": config.log_level, "handlers": ["out"]},
    }


# Our saved copies of fds 0-2 while the admin is forked: the forked child must close them, or it would
# hold our pipes anyway. `os.register_at_fork` runs in every child; it acts only during a start.
_saved_stdio: list[int] = []


def _close_saved_stdio_in_child() -> None:
    while _saved_stdio:
        with contextlib.suppress(OSError):
            os.close(_saved_stdio.pop())


def _listening_fds() -> list[int]:
    """This process's file descriptors that are listening TCP sockets (Linux /proc)."""
    listening: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        listening.update(int(cols[9]) for cols in map(str.split, lines) if cols[3] == "0A")
    found = []
    try:
        entries = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for name in entries:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in listening:
            found.append(int(name))
    return found


os.register_at_fork(after_in_child=_close_saved_stdio_in_child)


@contextlib.contextmanager
def _detached_stdio(target: Path | None) -> Iterator[None]:
    """Point fds 0-2 away from our own while the admin is forked, so it never holds our pipes.

    A system started with stdout on a pipe keeps that pipe open forever (THESPIAN.md): a caller
    waiting for EOF, like ``subprocess.run(capture_output=True)``, hangs if the system outlives us.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    null_in = os.open(os.devnull, os.O_RDONLY)
    out = (
        os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if target is not None
        else os.open(os.devnull, os.O_WRONLY)
    )
    _saved_stdio.extend([*saved, null_in, out])  # the child needs none of them beyond its 0-2
    # Nor the starter's own listening sockets (a front door, a simulated head-end): every actor is
    # forked from the admin, so each would hold them open, and a restarted server could not bind.
    _saved_stdio.extend(_listening_fds())
    try:
        os.dup2(null_in, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        yield
    finally:
        _saved_stdio.clear()
        for fd, copy in enumerate(saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null_in)
        os.close(out)


class ActorRuntime:
    """A started actor system seen from outside. Start with `ActorRuntime.start`."""

    def __init__(self, system: Any, config: RuntimeConfig) -> None:
        self._system = system
        self.config = config
        self.discarded_replies = 0

    @classmethod
    def start(cls, config: RuntimeConfig) -> ActorRuntime:
        if config.base is SystemBaseName.SIMPLE:
            system = ActorSystem(
                config.base.value, logDefs=_logging_dict(config), transientUnique=True
            )
            return cls(system, config)
        os.environ["THESPIAN_BASE_IPADDR"] = config.ip
        if config.log_file is not None:
            os.environ["THESPLOG_FILE"] = str(config.log_file.with_suffix(".thesplog"))
        apply_bind_patch()
        apply_peer_allowlist({config.ip, "127.0.0.1", *config.peers})
        apply_send_patch()  # actors/sendpatch.py: no eager log text, no wake-up socket per note to self
        if not port_is_free(config.ip, config.admin_port):
            raise RuntimeStartError(
                f"{config.ip}:{config.admin_port} is taken: refusing to join an admin we did not start"
            )
        capabilities = {"Admin Port": config.admin_port, **config.capabilities}
        try:
            with _detached_stdio(config.log_file):
                system = ActorSystem(
                    config.base.value,
                    capabilities=capabilities,
                    logDefs=_logging_dict(config),
                    transientUnique=True,
                )
        except Exception as exc:  # thespian raises a handful of types for "did not come up"
            raise RuntimeStartError(f"actor system did not start: {exc!r}") from exc
        return cls(system, config)

    # ------------------------------------------------------------ operations

    def create_root(self, actor_class: str, global_name: str) -> Address:
        """Create the one top-level actor, registered under ``global_name`` (returned if it exists)."""
        return cast(Address, self._system.createActor(actor_class, globalName=global_name))

    def tell(self, target: Address, message: object) -> None:
        self._system.tell(target, message)

    def ask(self, target: Address, message: Tagged, expect: type[R], timeout: float) -> R:
        """Send ``message`` and return the reply carrying its ``request_id``, of type ``expect``.

        Thespian's ask returns whatever reaches this endpoint next, which can be a late reply to an
        earlier ask: anything with another request id is dropped and counted.
        """
        deadline = time.monotonic() + timeout
        reply = self._system.ask(target, message, timeout)
        while True:
            if reply is not None:
                found = self._match(reply, message.request_id, expect)
                if found is not None:
                    return found
                self.discarded_replies += 1
                _log.debug("dropped a reply that is not for %s", message.request_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AskTimeout(f"no reply to {type(message).__name__} within {timeout} s")
            reply = self._system.listen(remaining)

    @staticmethod
    def _match(reply: Any, request_id: str, expect: type[R]) -> R | None:
        if isinstance(reply, PoisonMessage):
            if getattr(reply.poisonMessage, "request_id", None) == request_id:
                raise AskFailed(f"target failed on the request: {reply.details}")
            return None
        if getattr(reply, "request_id", None) != request_id:
            return None
        if not isinstance(reply, expect):
            raise AskFailed(f"expected {expect.__name__}, got {type(reply).__name__}")
        return reply

    def shutdown(self) -> None:
        """Stop every actor of the system (gives up after Thespian's 10 s if a handler blocks)."""
        self._system.shutdown()

    def endpoint_sockname(self) -> tuple[str, int] | None:
        """Where this process's own endpoint listens (multiproc only): it must be loopback too."""
        transport = getattr(getattr(self._system, "_systemBase", None), "transport", None)
        sock = getattr(transport, "socket", None)
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return str(host), int(port)


class TypedActor(ActorTypeDispatcher):  # type: ignore[misc]  # thespian is untyped
    """Base of jodo's actors: Thespian's type dispatch (``receiveMsg_<ClassName>``) with typed helpers."""

    @property
    def address(self) -> Address:
        return cast(Address, self.myAddress)

    def tell(self, target: Address, message: object) -> None:
        self.send(target, message)

    def spawn(self, actor_class: str) -> Address:
        """Create a child actor from its importable class path; its exit reaches us as ChildActorExited."""
        return cast(Address, self.createActor(actor_class))

    def wake_after(self, seconds: float, payload: object = None) -> None:
        self.wakeupAfter(timedelta(seconds=max(0.0, seconds)), payload)

    def exit_self(self) -> None:
        """Exit after this message; Thespian stops our children first, then tells our parent."""
        self.send(self.myAddress, ActorExitRequest())

    def ask_to_exit(self, target: Address) -> None:
        self.send(target, ActorExitRequest())

    def register_for_dead_letters(self) -> None:
        self.handleDeadLetters(True)

    def runs_in_own_process(self) -> bool:
        """Whether this actor has a process of its own (multiproc bases), not a thread's turn in a
        simpleSystemBase shared with its caller: process-wide acts (signals, prctl) only then."""
        return hasattr(self._myRef, "transport")
