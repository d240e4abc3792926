"""`DlmsSocketDriver`: the DLMS adapter as a `HeadEndDriver` — the contract core, the bridge, and sockets.

Same surface as `headend.socket_driver.HeadEndSocketDriver` (what `actors.gateway` and
`headend.threaded` drive), so the gateway needs no DLMS knowledge: `submit`, `on_readable`, `on_tick`,
`next_tick_in`, `close`, `.core` (breaker, pending, rate share). The many association sockets sit in one
epoll set whose own descriptor is `fileno()`: it is readable exactly when one of them has something
(data, a finished or failed connect, a hang-up), so one `ThespianWatch` covers the whole pool. Linux only.

The core's connection is virtual (to the in-process bridge) and always up; what a meter or the network
does wrong comes back as per-command errors, timeouts and read-backs (`headend.dlms.bridge`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import select
import socket
from collections.abc import Iterable

from headend.adapter import AdapterConfig, HeadEndAdapterCore, HeadEndStep
from headend.clock import Clock, WallClock
from headend.dlms.association import quiet_dlms_cosem_logs
from headend.dlms.bridge import (
    BridgeStats,
    DlmsBridge,
    LinkAction,
    LinkClose,
    LinkOpen,
    LinkWrite,
    stats_events,
)
from headend.dlms.settings import DlmsSettings
from headend.outcome import HeadEndOutcome
from headend.socket_driver import IN_PROGRESS, read_available, resolve_ipv4
from protocols.headend import HesCommand

__all__ = ["DlmsSocketDriver", "dlms_adapter_config"]

_EV_READ = select.EPOLLIN | select.EPOLLRDHUP
_EV_WRITE = select.EPOLLOUT


def dlms_adapter_config(settings: DlmsSettings, base: AdapterConfig | None = None) -> AdapterConfig:
    """The core's timeouts fitted to DLMS: a command queued in the bridge or waiting for its answer
    must not look lost to the core before the bridge gives up on it."""
    base = base or AdapterConfig()
    replace = dataclasses.replace
    floor = settings.queue_timeout + settings.connect_timeout + 2 * settings.response_timeout
    # the core, not the bridge, holds the backlog: it expires and paces queued commands, while a
    # command queued in the bridge past queue_timeout comes back no_communication and burns an attempt
    in_flight = min(base.max_in_flight, settings.pool_size * 8)
    return replace(base, command_timeout=max(base.command_timeout, floor),
                   max_in_flight=in_flight, max_batch=min(base.max_batch, in_flight),
                   read_timeout=max(base.read_timeout, floor),
                   heartbeat_interval=max(base.heartbeat_interval, 30.0),
                   idle_timeout=max(base.idle_timeout, 120.0))


class _Sock:
    __slots__ = ("buf", "connecting", "link", "sock")

    def __init__(self, link: int, sock: socket.socket) -> None:
        self.link = link
        self.sock = sock
        self.connecting = True
        self.buf = bytearray()


class DlmsSocketDriver:
    """One DLMS head-end. Every method returns the final outcomes it produced."""

    connecting = False  # the ThreadedHeadEndClient loop asks; our sockets are all in the epoll set

    def __init__(
        self,
        settings: DlmsSettings,
        config: AdapterConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        quiet_dlms_cosem_logs()
        self.settings = settings
        self.address = (resolve_ipv4(settings.host, settings.port), settings.port)
        self.clock: Clock = clock or WallClock()
        self.core = HeadEndAdapterCore(config or dlms_adapter_config(settings))
        self.bridge = DlmsBridge(settings)
        self._epoll: select.epoll | None = select.epoll()
        self._by_fd: dict[int, _Sock] = {}
        self._by_link: dict[int, _Sock] = {}
        self._wake_at: float | None = self.clock.now()
        self._reported = BridgeStats()

    def take_events(self) -> list[tuple[str, int]]:
        """DLMS events (association, refused, ...) counted since the last call, for metrics."""
        now = self.bridge.stats
        out = stats_events(now, self._reported)
        self._reported = dataclasses.replace(now)
        return out

    # --- the actor-facing surface -----------------------------------------------------------

    def fileno(self) -> int | None:
        return None if self._epoll is None else self._epoll.fileno()

    def wants_write(self) -> bool:
        return False

    def on_writable(self) -> list[HeadEndOutcome]:
        return []

    def next_tick_in(self, poll_io: bool = True) -> float | None:
        if self._epoll is None:
            return None
        due = [t for t in (self._wake_at, self.bridge.wake_at()) if t is not None]
        if not due:
            return None
        return max(0.0, self.clock.to_real(min(due) - self.clock.now()))

    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if self._epoll is not None:
            self._core_step(self.core.submit(commands, self.clock.now()), out)
        return out

    def on_readable(self) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if self._epoll is None:
            return out
        for fd, events in self._epoll.poll(0):
            s = self._by_fd.get(fd)
            if s is not None:
                self._on_event(s, events, out)
        return out

    def on_tick(self) -> list[HeadEndOutcome]:
        out: list[HeadEndOutcome] = []
        if self._epoll is None:
            return out
        now = self.clock.now()
        self._links(self.bridge.on_tick(now), out)
        self._core_step(self.core.on_tick(now), out)
        return out

    def close(self) -> None:
        for s in list(self._by_link.values()):
            self._close(s)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    # --- core ↔ bridge ----------------------------------------------------------------------

    def _core_step(self, step: HeadEndStep, out: list[HeadEndOutcome]) -> None:
        pending: HeadEndStep | None = step
        while pending is not None:
            step, pending = pending, None
            out.extend(step.outcomes)
            self._wake_at = step.wake_at
            now = self.clock.now()
            if step.close:
                self._links(self.bridge.reset(), out)
            if step.send:
                self._links(self.bridge.from_core(step.send, now), out)
            if step.connect:
                pending = self.core.connection_made(now)
                continue
            back = self.bridge.take_core_bytes()
            if back:
                pending = self.core.on_bytes(back, now)

    def _feed_core(self, out: list[HeadEndOutcome]) -> None:
        back = self.bridge.take_core_bytes()
        if back:
            self._core_step(self.core.on_bytes(back, self.clock.now()), out)

    # --- links ------------------------------------------------------------------------------

    def _links(self, actions: list[LinkAction], out: list[HeadEndOutcome]) -> None:
        self._run_links(actions)
        self._feed_core(out)
        more = self.bridge.pump(self.clock.now())
        while more:
            self._run_links(more)
            self._feed_core(out)
            more = self.bridge.pump(self.clock.now())

    def _run_links(self, actions: list[LinkAction]) -> None:
        todo = list(actions)
        while todo:
            a = todo.pop(0)
            if isinstance(a, LinkOpen):
                todo += self._open(a.link)
            elif isinstance(a, LinkWrite):
                todo += self._write(a.link, a.data)
            elif isinstance(a, LinkClose):
                s = self._by_link.get(a.link)
                if s is not None:
                    self._close(s)

    def _open(self, link: int) -> list[LinkAction]:
        assert self._epoll is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.address)
        s = _Sock(link, sock)
        if err != 0 and err not in IN_PROGRESS:
            sock.close()
            return self.bridge.link_failed(link, self.clock.now(), errno.errorcode.get(err, str(err)))
        self._by_fd[sock.fileno()] = s
        self._by_link[link] = s
        self._epoll.register(sock.fileno(), _EV_READ | _EV_WRITE)
        if err == 0:
            return self._connected(s)
        return []

    def _connected(self, s: _Sock) -> list[LinkAction]:
        s.connecting = False
        self._watch(s)
        return self.bridge.link_connected(s.link, self.clock.now())

    def _watch(self, s: _Sock) -> None:
        if self._epoll is not None:
            want = _EV_READ | (_EV_WRITE if s.connecting or s.buf else 0)
            self._epoll.modify(s.sock.fileno(), want)

    def _write(self, link: int, data: bytes) -> list[LinkAction]:
        s = self._by_link.get(link)
        if s is None:
            return []
        s.buf += data
        return [] if s.connecting else self._flush(s)

    def _flush(self, s: _Sock) -> list[LinkAction]:
        try:
            while s.buf:
                n = s.sock.send(s.buf)
                del s.buf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._close(s)
            return self.bridge.link_failed(s.link, self.clock.now(), e.strerror or type(e).__name__)
        self._watch(s)
        return []

    def _on_event(self, s: _Sock, events: int, out: list[HeadEndOutcome]) -> None:
        now = self.clock.now()
        if s.connecting:
            err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err or events & (select.EPOLLERR | select.EPOLLHUP):
                self._close(s)
                self._links(self.bridge.link_failed(s.link, now, errno.errorcode.get(err, "hang-up")), out)
                return
            if events & _EV_WRITE:
                actions = self._connected(s)
                if s.buf:
                    actions += self._flush(s)
                self._links(actions, out)
            return
        if events & _EV_WRITE and s.buf:
            self._links(self._flush(s), out)
        if events & (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
            self._read(s, out)

    def _read(self, s: _Sock, out: list[HeadEndOutcome]) -> None:
        data, lost = read_available(s.sock)  # level-triggered epoll: what is left fires again
        now = self.clock.now()
        if data:
            self._links(self.bridge.link_bytes(s.link, data, now), out)
        if lost is not None and self._by_link.get(s.link) is s:
            self._close(s)
            self._links(self.bridge.link_failed(s.link, now, lost), out)

    def _close(self, s: _Sock) -> None:
        self._by_link.pop(s.link, None)
        fd = s.sock.fileno()
        if self._by_fd.get(fd) is s:
            del self._by_fd[fd]
            if self._epoll is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        with contextlib.suppress(OSError):
            s.sock.close()
