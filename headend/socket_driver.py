"""`HeadEndSocketDriver`: the adapter core over one non-blocking TCP socket, for an actor's mailbox.

No call blocks: connect is non-blocking (completion polled), reads take what is there, writes send
what the kernel takes and keep the rest. An actor drives it like this (THESPIAN.md, "Non-blocking I/O
inside an actor")::

    def receiveMessage(self, msg, sender):
        if isinstance(msg, WatchMessage):        outcomes = self.driver.on_readable()
        elif isinstance(msg, WakeupMessage):     outcomes = self.driver.on_tick(); self.armed_at = None
        elif isinstance(msg, RelayCommandBatch): outcomes = self.driver.submit(msg.commands)
        ...                                      # report outcomes upstream
        # after EVERY call: any of them may move the next deadline earlier (a reply that lets a
        # lingering frame go, a new timeout); arm a wakeup unless one is armed at least as early
        due = now + (self.driver.next_tick_in() or 1.0)
        if self.armed_at is None or due < self.armed_at:
            self.wakeupAfter(timedelta(seconds=due - now)); self.armed_at = due
        fd = self.driver.fileno()
        return ThespianWatch([fd] if fd is not None else [])   # on EVERY return

A wakeup that fires early is harmless (on_tick does what is due and nothing else); a missing one
stalls timers, retries and lingering batches until the next readable event or heartbeat.

`host` should be an IPv4 address literal; a name is resolved once, in the constructor (the only call
that may block), never on reconnect.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
from collections.abc import Iterable

from headend.adapter import AdapterConfig, HeadEndAdapterCore, HeadEndStep
from headend.clock import Clock, WallClock
from headend.outcome import HeadEndOutcome
from protocols.headend import HesCommand

__all__ = ["IN_PROGRESS", "HeadEndSocketDriver", "read_available", "resolve_ipv4"]

_RECV = 256 * 1024
_MAX_READ_PER_CALL = 8 * 1024 * 1024  # keep one handler short; the watch fires again if more waits
_IO_POLL = 0.005  # real seconds between ticks while a connect or a write is pending
IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EAGAIN}  # a connect going on


def resolve_ipv4(host: str, port: int) -> str:
    """``host`` as an IPv4 address (resolved once, at start: a head-end is a fixed endpoint)."""
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        return str(info[0][4][0])


def read_available(sock: socket.socket, limit: int = _MAX_READ_PER_CALL) -> tuple[bytes, str | None]:
    """What a non-blocking socket holds now (up to about ``limit`` bytes: the watch fires again if more
    waits), and why the connection is gone if it is (None while it is up)."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as e:
            return b"".join(chunks), e.strerror or type(e).__name__
        if not data:
            return b"".join(chunks), "closed by peer"
        chunks.append(data)
        got += len(data)
    return b"".join(chunks), None


class HeadEndSocketDriver:
    """One head-end connection. Every method returns the final outcomes it produced."""

    def __init__(
        self,
        host: str,
        port: int,
        config: AdapterConfig | None = None,
        *,
        clock: Clock | None = None,
        core: HeadEndAdapterCore | None = None,
    ) -> None:
        self.address = (resolve_ipv4(host, port), port)
        self.clock: Clock = clock or WallClock()
        self.core = core or HeadEndAdapterCore(config)
        self._sock: socket.socket | None = None
        self._connecting = False
        self._wbuf = bytearray()
        self._wake_at: float | None = self.clock.now()
        self._closed = False

    # --- the actor-facing surface -----------------------------------------------------------

    def fileno(self) -> int | None:
        """The socket to watch for readability (None while there is none)."""
        return None if self._sock is None else self._sock.fileno()

    @property
    def connecting(self) -> bool:
        return self._connecting

    def wants_write(self) -> bool:
        return bool(self._wbuf) and self._sock is not None

    def next_tick_in(self, poll_io: bool = True) -> float | None:
        """Real seconds until `on_tick` is due; short while a connect or write is pending (poll_io)."""
        if self._closed:
            return None
        delay = None
        if self._wake_at is not None:
            delay = max(0.0, self.clock.to_real(self._wake_at - self.clock.now()))
        if poll_io and (self._connecting or self.wants_write()):
            delay = _IO_POLL if delay is None else min(delay, _IO_POLL)
        return delay

    def tick_due(self) -> bool:
        return self._wake_at is not None and self.clock.now() >= self._wake_at

    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if not self._closed:
            self._apply(self.core.submit(commands, self.clock.now()), out)
        return out

    def on_readable(self) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        sock = self._sock
        if sock is None:
            return out
        if self._connecting:
            self._check_connect(out)
            return out
        data, lost = read_available(sock)
        if data:
            self._apply(self.core.on_bytes(data, self.clock.now()), out)
        if lost is not None and self._sock is sock:  # not a newer socket the core opened meanwhile
            self._lost(lost, out)
        return out

    def on_writable(self) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if self._connecting:
            self._check_connect(out)
        else:
            self._flush(out)
        return out

    def on_tick(self) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if self._closed:
            return out
        if self._connecting:
            self._check_connect(out)
        if self._wbuf:
            self._flush(out)
        self._apply(self.core.on_tick(self.clock.now()), out)
        return out

    def close(self) -> None:
        """Stop for good: close the socket; later calls do nothing."""
        self._closed = True
        self._close_socket()

    # --- socket work ------------------------------------------------------------------------

    def _apply(self, step: HeadEndStep, out: list[HeadEndOutcome]) -> None:
        pending: HeadEndStep | None = step
        while pending is not None:
            step, pending = pending, None
            out.extend(step.outcomes)
            self._wake_at = step.wake_at
            if step.send and self._sock is not None:
                self._wbuf += step.send
            if step.close:
                if not self._connecting:
                    self._flush_step()  # best effort: a last error frame before hanging up
                self._close_socket()
            if step.connect:
                pending = self._start_connect()
            if pending is None and self._wbuf and not self._connecting:
                pending = self._flush_step()

    def _start_connect(self) -> HeadEndStep | None:
        self._close_socket()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.address)
        self._sock = sock
        if err == 0:
            return self.core.connection_made(self.clock.now())
        if err in IN_PROGRESS:
            self._connecting = True
            return None
        self._close_socket()
        return self.core.connect_failed(self.clock.now(), errno.errorcode.get(err, str(err)))

    def _check_connect(self, out: list[HeadEndOutcome]) -> None:
        sock = self._sock
        if sock is None:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close_socket()
            self._apply(self.core.connect_failed(self.clock.now(), errno.errorcode.get(err, str(err))), out)
            return
        _, writable, _ = select.select([], [sock], [], 0)
        if writable:
            self._connecting = False
            self._apply(self.core.connection_made(self.clock.now()), out)

    def _flush(self, out: list[HeadEndOutcome]) -> None:
        step = self._flush_step()
        if step is not None:
            self._apply(step, out)

    def _flush_step(self) -> HeadEndStep | None:
        """Send what the kernel takes; a dead socket becomes connection_lost."""
        sock = self._sock
        if sock is None:
            self._wbuf.clear()
            return None
        view = memoryview(self._wbuf)
        sent = 0
        try:
            while sent < len(view):
                sent += sock.send(view[sent:])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            view.release()
            self._close_socket()
            return self.core.connection_lost(self.clock.now(), e.strerror or type(e).__name__)
        view.release()
        del self._wbuf[:sent]
        return None

    def _lost(self, why: str, out: list[HeadEndOutcome]) -> None:
        self._close_socket()
        self._apply(self.core.connection_lost(self.clock.now(), why), out)

    def _close_socket(self) -> None:
        self._connecting = False
        self._wbuf.clear()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
