"""The simulated head-end on asyncio TCP: `HeadEndSimulator`, and `SimulatorThread` to run it aside.

The server moves bytes and time; `SimCore` decides. One pump task runs `SimCore.on_tick` whenever
something is due (it sleeps until then, at most 50 ms real time, and is woken by new work), and acts
on outage edges: in ``refuse`` mode it stops listening (and listens again on the same port after),
in ``close`` mode it accepts and closes at once; either way open connections are closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import TypeVar

from headend.clock import Clock, WallClock
from headend.sim.config import OutageMode, SimConfig
from headend.sim.core import SimCore, SimStats
from headend.sim.fleet import Fleet
from protocols.errors import FrameError
from protocols.headend import (
    HesControlState,
    HesError,
    HesFrame,
    HesFrameReader,
    HesMeterState,
    encode_frame,
)

__all__ = ["HeadEndSimulator", "SimulatorThread"]

T = TypeVar("T")
_MAX_IDLE = 0.05  # real seconds between pump runs when nothing is due


class _Connection(asyncio.Protocol):
    def __init__(self, sim: HeadEndSimulator) -> None:
        self.sim = sim
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.reader = HesFrameReader(sim.config.max_frame_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        sim = self.sim
        if sim.core.outage_active(sim.clock.now()):
            transport.close()  # outage in "close" mode: accept, then hang up
            return
        self.transport = transport
        self.sid = sim.core.open_session(sim.clock.now())
        sim.connections[self.sid] = self

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        sim, core = self.sim, self.sim.core
        now = sim.clock.now()
        self.reader.feed(data)
        out: list[HesFrame] = []
        close = False
        while True:
            try:
                frame = self.reader.next_frame()
            except FrameError as e:
                out.append(core.frame_error(self.sid, e))
                if e.fatal:
                    close = True
                    break
                continue
            if frame is None:
                break
            replies = core.handle(self.sid, frame, now)
            out.extend(replies)
            if any(isinstance(r, HesError) and r.fatal for r in replies):
                close = True
                break
        # quiet mode executes at once: this session's results go out right behind the acks
        results = core.take_results()
        out.extend(results.pop(self.sid, ()))
        if out:
            self.transport.write(b"".join(encode_frame(f) for f in out))
        if close:
            self.transport.close()
        sim.write_results(results)
        sim.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sid:
            self.sim.connections.pop(self.sid, None)
            self.sim.core.close_session(self.sid)


class HeadEndSimulator:
    """An asyncio head-end serving `SimCore` on (host, port); port 0 picks a free one.

    Use from its event loop: `await start()`, `await stop()`; the in-process API (`relay_state`,
    `press_button`, ...) must be called on the loop's thread (`SimulatorThread` does that for you).
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fleet: Fleet | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.clock: Clock = clock or WallClock()
        self.host = host
        self.port = port
        self.core = SimCore(self.config, self.clock.now(), fleet)
        self.connections: dict[int, _Connection] = {}
        self._server: asyncio.Server | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._running = False

    @property
    def fleet(self) -> Fleet:
        return self.core.fleet

    @property
    def stats(self) -> SimStats:
        return self.core.stats

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._running = True
        await self._listen()
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        # a flag, not cancel(): Python 3.11's wait_for can swallow a cancellation that races the
        # wake-up it waits for, and the pump would then run forever
        self._running = False
        if self._pump_task is not None:
            self.kick()
            await self._pump_task
            self._pump_task = None
        self._drop_connections()
        await self._unlisten()

    def write_results(self, frames_by_session: dict[int, list[HesFrame]]) -> None:
        for sid, frames in frames_by_session.items():
            conn = self.connections.get(sid)
            if conn is not None and conn.transport is not None and frames:
                conn.transport.write(b"".join(encode_frame(f) for f in frames))

    def kick(self) -> None:
        """New work may be due sooner than the pump thinks: wake it."""
        if self._wake is not None:
            self._wake.set()

    def _drop_connections(self) -> None:
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        self.connections.clear()

    async def _pump(self) -> None:
        assert self._wake is not None
        while self._running:
            now = self.clock.now()
            tick = self.core.on_tick(now)
            if tick.outage_started:
                self._drop_connections()
                if self.config.outage_mode is OutageMode.REFUSE:
                    await self._unlisten()
            if tick.outage_ended and self._server is None:
                await self._listen()
            self.write_results(tick.frames)
            due = self.core.next_due(now)
            delay = _MAX_IDLE if due is None else min(_MAX_IDLE, self.clock.to_real(due - now))
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            else:
                await asyncio.sleep(0)  # something is due now: still let the connections run

    # --- in-process API (loop thread) -------------------------------------------------------

    def relay_state(self, serial: str) -> HesMeterState:
        return self.core.fleet.state(serial)

    def press_button(self, serial: str) -> HesMeterState:
        return self.core.fleet.press_button(serial)

    def set_control_mode(self, serial: str, mode: int) -> None:
        self.core.fleet.set_control_mode(serial, mode)

    def set_control_state(self, serial: str, state: HesControlState) -> None:
        self.core.fleet.set_control_state(serial, state)

    def begin_outage(self, seconds: float | None = None) -> None:
        self.core.begin_outage(self.clock.now(), seconds)
        self.kick()

    def lab_clock(self, was: float, now: float) -> int:
        """A lab clock moved from ``was`` to ``now``: report the days that ended (daily_reads = lab)."""
        days = self.core.lab_clock(was, now)
        self.kick()
        return days

    def end_outage(self) -> None:
        self.core.end_outage(self.clock.now())
        self.kick()


class SimulatorThread:
    """A `HeadEndSimulator` on its own event loop in a daemon thread; a context manager.

    Every method is safe to call from any thread: it runs on the simulator's loop and returns the
    result. `stop()` (or leaving the `with`) closes the server and joins the thread.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fleet: Fleet | None = None,
    ) -> None:
        self.sim = HeadEndSimulator(config, clock=clock, host=host, port=port, fleet=fleet)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def host(self) -> str:
        return self.sim.host

    @property
    def port(self) -> int:
        return self.sim.port

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="hes-sim", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                await self.sim.start()
            except BaseException as e:
                ready.set_exception(e)
                return
            ready.set_result(None)
            await self._stopped.wait()
            await self.sim.stop()

        asyncio.run(serve())

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[HeadEndSimulator], T], timeout: float = 10.0) -> T:
        """Run fn(simulator) on the simulator's loop and return what it returns."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("simulator not started")
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(self.sim))
            except BaseException as e:
                done.set_exception(e)

        loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def relay_state(self, serial: str) -> HesMeterState:
        return self.call(lambda s: s.relay_state(serial))

    def relay_states(self, serials: list[str]) -> list[HesMeterState]:
        return self.call(lambda s: [s.relay_state(x) for x in serials])

    def press_button(self, serial: str) -> HesMeterState:
        return self.call(lambda s: s.press_button(serial))

    def set_control_mode(self, serial: str, mode: int) -> None:
        self.call(lambda s: s.set_control_mode(serial, mode))

    def set_control_state(self, serial: str, state: HesControlState) -> None:
        self.call(lambda s: s.set_control_state(serial, state))

    def begin_outage(self, seconds: float | None = None) -> None:
        self.call(lambda s: s.begin_outage(seconds))

    def end_outage(self) -> None:
        self.call(lambda s: s.end_outage())

    def lab_clock(self, was: float, now: float) -> int:
        """See `HeadEndSimulator.lab_clock`; returns the days queued for reporting."""
        return self.call(lambda s: s.lab_clock(was, now))

    def stats(self) -> SimStats:
        """A copy of the counters."""
        return self.call(lambda s: dataclasses.replace(s.stats, rejected=dict(s.stats.rejected)))

    def outage_active(self) -> bool:
        return self.call(lambda s: s.core.outage_active(s.clock.now()))
