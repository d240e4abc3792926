"""`ThreadedHeadEndClient`: the socket driver on a background thread, for tests, tools and the bench.

Thread-safe: `submit` from any thread; outcomes are collected in order and can be awaited with a
deadline. The thread selects on the socket (read, and write while output is pending) and a wake-up
pipe, and ticks the core when it is due.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from headend.adapter import AdapterConfig, HeadEndAdapterCore
from headend.clock import Clock
from headend.outcome import HeadEndOutcome
from headend.socket_driver import HeadEndSocketDriver
from protocols.headend import HesCommand

__all__ = ["ThreadedHeadEndClient"]

T = TypeVar("T")
_MAX_SELECT = 0.1


class LoopDriver(Protocol):
    """What the loop drives: `HeadEndSocketDriver`, or another adapter's driver (e.g. DLMS)."""

    core: HeadEndAdapterCore

    @property
    def connecting(self) -> bool: ...
    def fileno(self) -> int | None: ...
    def wants_write(self) -> bool: ...
    def next_tick_in(self, poll_io: bool = True) -> float | None: ...
    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]: ...
    def on_readable(self) -> list[HeadEndOutcome]: ...
    def on_writable(self) -> list[HeadEndOutcome]: ...
    def on_tick(self) -> list[HeadEndOutcome]: ...
    def close(self) -> None: ...


class ThreadedHeadEndClient:
    def __init__(
        self,
        host: str,
        port: int,
        config: AdapterConfig | None = None,
        *,
        clock: Clock | None = None,
        driver: LoopDriver | None = None,
    ) -> None:
        self.driver: LoopDriver = driver or HeadEndSocketDriver(host, port, config, clock=clock)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inbox: list[list[HesCommand]] = []
        self._outcomes: list[HeadEndOutcome] = []
        self._taken = 0
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def core(self) -> HeadEndAdapterCore:
        return self.driver.core

    def start(self) -> ThreadedHeadEndClient:
        self._thread = threading.Thread(target=self._run, name="hes-client", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.driver.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self) -> ThreadedHeadEndClient:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, commands: Iterable[HesCommand]) -> None:
        batch = list(commands)
        with self._lock:
            self._inbox.append(batch)
        self._poke()

    def outcomes(self) -> list[HeadEndOutcome]:
        """Every outcome so far, in the order they ended."""
        with self._lock:
            return list(self._outcomes)

    def take_outcomes(self) -> list[HeadEndOutcome]:
        """Outcomes not returned by an earlier take."""
        with self._lock:
            new = self._outcomes[self._taken :]
            self._taken = len(self._outcomes)
            return new

    def wait_for_outcomes(self, count: int, timeout: float) -> bool:
        """Wait (real seconds) until at least `count` outcomes arrived in total; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._outcomes) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    return False
                self._cond.wait(left)
            return True

    def inspect(self, fn: Callable[[HeadEndAdapterCore], T]) -> T:
        """fn(core) under the loop's lock: a consistent look at breaker, stats, pending."""
        with self._lock:
            return fn(self.driver.core)

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # surfaced to waiters; a test sees it instead of hanging
            with self._cond:
                self.error = e
                self._cond.notify_all()
            raise

    def _loop(self) -> None:
        driver = self.driver
        while True:
            with self._lock:
                if self._stop:
                    return
                inbox, self._inbox = self._inbox, []
                out: list[HeadEndOutcome] = []
                for batch in inbox:
                    out += driver.submit(batch)
                out += driver.on_tick()
                self._publish(out)
                fd = driver.fileno()
                write = fd is not None and (driver.connecting or driver.wants_write())
                timeout = driver.next_tick_in(poll_io=False)
            rlist: list[int] = [self._wake_r.fileno()]
            if fd is not None:
                rlist.append(fd)
            wait = _MAX_SELECT if timeout is None else min(_MAX_SELECT, timeout)
            wlist: list[int] = [fd] if write and fd is not None else []
            try:
                readable, writable, _ = select.select(rlist, wlist, [], wait)
            except (OSError, ValueError):
                continue  # the socket was closed under us by a step; loop and re-evaluate
            if self._wake_r.fileno() in readable:
                with contextlib.suppress(BlockingIOError):
                    while self._wake_r.recv(4096):
                        pass
            with self._lock:
                out = []
                if fd is not None and fd in readable and driver.fileno() == fd:
                    out += driver.on_readable()
                if fd is not None and fd in writable and driver.fileno() == fd:
                    out += driver.on_writable()
                self._publish(out)

    def _publish(self, out: list[HeadEndOutcome]) -> None:
        """Caller holds the lock."""
        if out:
            self._outcomes.extend(out)
            self._cond.notify_all()
