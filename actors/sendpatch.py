"""Three costs Thespian 4.0.1 puts on every message, taken off (applied with the bind patch, in the
process that starts the actor system, so the admin and every actor process inherit them).

* **Eager log text.** ``asyncTransportBase._submitTransmit``, ``systemCommonBase._send_intent_to_
  transport`` and ``ActorManager._handleOneMessage`` each call ``identify()`` on the intent or
  envelope as an argument of a DEBUG ``thesplog`` that is almost never written: the text (target
  address, timers, message type and ``str`` of the message) is built for every message sent and
  received. `apply_send_patch` makes ``identify()`` return a `_LazyText` that builds the very same
  string only when something formats it (``thesplog`` and ``logging`` format with ``%``, the only
  ways Thespian uses it); ``str()`` of an intent or envelope is unchanged.
* **A wake-up connection per note to self.** A message an actor sends to itself becomes a transmit
  intent whose envelope is queued in the transport's list of received envelopes; then, to break a
  ``select`` that might be blocking, Thespian opens a TCP connection to the actor's own socket
  (``TCPTransport.interrupt_wait``: a socket, a connect, an accept and a close per message), and the
  intent counts as a pending transmit until the loop's next pass after ``select``. From inside a
  handler, on the thread that runs the transport's loop, nothing blocks: the loop takes every queued
  envelope before it selects again. For the message types named by `send_to_self_without_wakeup`
  only (the shard's and the desk's group-commit notes, told from handlers only), sent to the actor's
  own address from that thread, ``ActorManager.actor_send`` queues the very same envelope directly:
  no connection and no pending transmit (which matters: past asyncTransportBase's limit of pending
  transmits, a note that left no wake-up would wait unsent for the next message). Order is kept: the
  note still queues behind every envelope already read.
* **A kernel selector per loop pass (opt-in: `POLL_SELECTOR_ENV`).** ``TCPTransport._runWithExpiry`` builds a
  ``selectors.DefaultSelector()`` (an epoll instance: a file descriptor created, one ``epoll_ctl`` per
  socket, closed again) on every pass of its loop, and a message costs several passes at each end.
  `apply_send_patch` gives the transport module a ``selectors`` whose ``DefaultSelector`` is
  `_PollPass`: the same three calls on one ``select.poll`` object (no descriptor of its own, one
  system call per pass), ~11.8 → ~2.4 µs a pass with six sockets. A descriptor poll reports as invalid
  raises ``OSError(EBADF)`` from ``select``, as epoll's ``register`` would, so the transport's own
  recovery from a bad descriptor runs unchanged.

Measured under the signed-webhook load (docs/benchmarks.md, "Issue 13, sessions 7 and 8").
Both patch private code: each is applied only if thespian is the pinned version and the patched
functions still have the shape they were written against; otherwise nothing is patched and a
warning is logged (the system works as before, only slower).
"""

from __future__ import annotations

import errno
import inspect
import logging
import math
import os
import select
import selectors
import threading
import types
from importlib import metadata
from typing import Any

__all__ = ["apply_send_patch", "send_patch_applied", "send_to_self_without_wakeup"]

log = logging.getLogger("jodo.runtime")

PINNED_THESPIAN = "4.0.1"
_MARK = "_jodo_send_patched"
_LOOP_LOCAL: set[type] = set()
# what the patched functions must still contain (so a changed Thespian is not patched blind)
_EXPECTED_SELF_BRANCH = (
    "if intent.targetAddr == self.myAddress:",
    "self._processReceivedEnvelope(ReceiveEnvelope(intent.targetAddr,",
    "self.interrupt_wait()",
    "return self._finishIntent(intent)",
    "def actor_send(self, targetAddr, msg):",
    "r = self.transport.run(self.handleMessages)",
)


class _LazyText:
    """What ``identify()`` returns once patched: the original text, built when formatted."""

    __slots__ = ("_build", "_of")

    def __init__(self, build: Any, of: Any) -> None:
        self._build, self._of = build, of

    def __str__(self) -> str:
        return str(self._build(self._of))

    __repr__ = __str__


class _PollKey:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class _PollPass:
    """What ``TCPTransport`` uses of ``selectors.DefaultSelector`` (register, select, close; keys with
    ``.fd``), on one ``select.poll``: built and dropped on every pass of the transport's loop."""

    __slots__ = ("_events", "_poll")

    def __init__(self) -> None:
        self._poll = select.poll()
        self._events: dict[int, int] = {}

    def register(self, fd: int, events: int) -> None:
        if fd in self._events:  # as selectors does (the transport never registers twice)
            raise KeyError(f"{fd!r} is already registered")
        if fd < 0:
            raise ValueError(f"Invalid file descriptor: {fd}")
        self._events[fd] = events
        self._poll.register(fd, (select.POLLIN if events & selectors.EVENT_READ else 0)
                            | (select.POLLOUT if events & selectors.EVENT_WRITE else 0))

    def select(self, timeout: float | None = None) -> list[tuple[_PollKey, int]]:
        ms = None if timeout is None else max(0, math.ceil(timeout * 1e3))
        ready = []
        for fd, polled in self._poll.poll(ms):
            if polled & select.POLLNVAL:  # a closed descriptor: what epoll's register raises
                raise OSError(errno.EBADF, f"bad file descriptor {fd}")
            mask = (selectors.EVENT_READ if polled & ~select.POLLOUT else 0) | (
                selectors.EVENT_WRITE if polled & ~select.POLLIN else 0)
            ready.append((_PollKey(fd), mask & self._events[fd]))
        return ready

    def close(self) -> None:
        self._events.clear()


#: The selector patch is off unless this is "1": in session 8 one of three PostgreSQL bench_runtime runs
#: with it hung in its 500/s stage (every node process idle, the bench re-sending) and the cause was not
#: found; none of the SQLite runs or the full suite did. Measured: -13 to -20 % CPU per Thespian
#: message (docs/benchmarks.md, "Issue 13, session 8"). Enable it to reproduce, not in production.
POLL_SELECTOR_ENV = "JODO_THESPIAN_POLL_SELECTOR"

_POLL_SELECTORS = types.SimpleNamespace(
    DefaultSelector=_PollPass, EVENT_READ=selectors.EVENT_READ, EVENT_WRITE=selectors.EVENT_WRITE)
_EXPECTED_SELECTOR_USE = (
    "sel = selectors.DefaultSelector()",
    "sel.register(each, selectors.EVENT_READ)",
    "sel.register(each, selectors.EVENT_WRITE)",
    "events = sel.select(delay)",
    "for key, event in events:",
    "rrecv.append(key.fd)",
    "sel.close()",
)


def send_to_self_without_wakeup(*types: type) -> None:
    """Let these message types, sent by an actor to itself from a handler, skip the wake-up connection."""
    _LOOP_LOCAL.update(types)


def send_patch_applied() -> bool:
    from thespian.system.transport import TCPTransport

    return bool(getattr(TCPTransport.TCPTransport, _MARK, False))


def apply_send_patch() -> bool:
    """Patch this process's thespian (idempotent). Returns whether it is patched."""
    from thespian.system.actorManager import ActorManager
    from thespian.system.transport import ReceiveEnvelope, TransmitIntent
    from thespian.system.transport import TCPTransport as tcp

    transport = tcp.TCPTransport
    if getattr(transport, _MARK, False):
        return True
    try:
        version = metadata.version("thespian")
        source = inspect.getsource(transport._scheduleTransmitActual) + inspect.getsource(ActorManager)
    except (metadata.PackageNotFoundError, OSError, TypeError) as exc:
        log.warning("thespian send patch not applied: %s", exc)
        return False
    missing = [text for text in _EXPECTED_SELF_BRANCH if text not in source]
    if version != PINNED_THESPIAN or missing:
        log.warning("thespian send patch not applied", extra={"version": version, "missing": missing})
        return False

    for cls in (TransmitIntent, ReceiveEnvelope):
        cls.identify = _lazy_identify(cls.identify)
    # ReceiveEnvelope.__str__ returns identify() itself: keep it a str (TransmitIntent's formats it)
    ReceiveEnvelope.__str__ = lambda self: str(self.identify())

    send = ActorManager.actor_send

    def actor_send(self: Any, target: Any, message: Any) -> Any:
        # (main_thread() is looked up each time: an actor process is forked from whichever thread
        # started the system, and that thread is the child's main thread)
        if (type(message) in _LOOP_LOCAL and isinstance(self.transport, transport)
                and target == self.transport.myAddress
                and threading.current_thread() is threading.main_thread()):
            # what Thespian's own branch for a message to itself queues, without a transmit intent:
            # no wake-up connection, and no pending transmit (completed only after the loop's next
            # select: past asyncTransportBase's limit of pending ones, a note would wait unsent)
            self.transport._processReceivedEnvelope(ReceiveEnvelope(target, message))
            return None
        return send(self, target, message)

    ActorManager.actor_send = actor_send
    if os.environ.get(POLL_SELECTOR_ENV) == "1":
        loop = inspect.getsource(transport._runWithExpiry) + inspect.getsource(transport._check_fd)
        if all(text in loop for text in _EXPECTED_SELECTOR_USE) and tcp.selectors is selectors:
            tcp.selectors = _POLL_SELECTORS
        else:
            log.warning("thespian selector patch not applied: _runWithExpiry changed")
    setattr(transport, _MARK, True)
    return True


def _lazy_identify(original: Any) -> Any:
    def identify(self: Any) -> _LazyText:
        return _LazyText(original, self)

    return identify
