"""`DlmsFleetSim`: a DLMS meter fleet behind one TCP port, each meter a logical device (wPort).

Per connection one Gurux `MeterServer` (`headend.dlms_sim.meter`); the truth is one `Fleet` (three
bytes per meter), shared by every connection. wPort `wport_base + i` is meter ``i`` of the fleet
(serial ``MPW<i:08d>``), the same rule as `headend.dlms.settings.DlmsSettings.wport`.

Faults, per meter (set from tests or `jodo hes-sim --protocol dlms` flags):
- `refuse`: the AARQ is rejected (permanent: authentication failure)
- `unreachable`: the TCP connection is closed as soon as the AARQ arrives
- `mute` (execute=False): requests after the AARE are never answered and never run
- `mute` (execute=True): ACTIONs run but no answer comes back (the switch happened; nobody was told)
- `stick` (report=False): ACTIONs answer success and nothing moves (a welded/stuck relay; read-back
  shows it); `stick` (report=True): ACTIONs answer HARDWARE_FAULT
- `local_disconnect` / `local_reconnect`: transitions g / h, as a limiter or prepaid credit would
- `press_button`: transitions e / f
Thread-safe: the loop thread and inspecting threads share one lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from headend.dlms_sim.meter import MeterHooks, MeterServer, handle
from headend.dlms_sim.transitions import (
    button_transition,
    local_disconnect,
    local_reconnect,
    remote_transition,
)
from headend.sim.fleet import Fleet
from protocols.headend import HesAction, HesControlState, HesMeterState

T = TypeVar("T")

__all__ = ["DlmsFleetSim", "DlmsSimStats", "DlmsSimulatorThread"]

_HARDWARE_FAULT, _READ_WRITE_DENIED = 1, 3


@dataclass(slots=True)
class DlmsSimStats:
    connections: int = 0
    max_concurrent: int = 0
    associations: int = 0
    refused: int = 0
    actions: int = 0
    reads: int = 0
    releases: int = 0
    dropped_answers: int = 0


class DlmsFleetSim(MeterHooks):
    def __init__(self, fleet: Fleet, *, password: bytes | None = None, wport_base: int = 256) -> None:
        self.fleet = fleet
        self.password = password
        self.wport_base = wport_base
        self.lock = threading.Lock()
        self.stats = DlmsSimStats()
        self.refused: set[int] = set()
        self.unreachable: set[int] = set()
        self.muted: dict[int, tuple[bool, int | None]] = {}  # index → (run it anyway, requests left)
        self.stuck: dict[int, bool] = {}  # index → report HARDWARE_FAULT
        self.open = 0

    # --- MeterHooks (called under the lock, from the loop) -------------------------------------

    def meter_for(self, wport: int) -> int | None:
        i = wport - self.wport_base
        return i if 0 <= i < self.fleet.size else None

    def authenticate(self, index: int, level: int, password: bytes | None) -> bool:
        if index in self.refused:
            self.stats.refused += 1
            return False
        if self.password is not None and (level != 1 or password != self.password):
            self.stats.refused += 1
            return False
        self.stats.associations += 1
        return True

    def read(self, index: int) -> tuple[bool, int, int]:
        self.stats.reads += 1
        s = self.fleet.state(self.fleet.serial(index))
        assert s.control_state is not None and s.control_mode is not None
        return bool(s.output_state), int(s.control_state), int(s.control_mode)

    def act(self, index: int, method: int) -> int:
        self.stats.actions += 1
        if method not in (1, 2):
            return 4  # object/method undefined
        stuck = self.stuck.get(index)
        if stuck is not None:
            return _HARDWARE_FAULT if stuck else 0
        serial = self.fleet.serial(index)
        s = self.fleet.state(serial)
        assert s.control_state is not None and s.control_mode is not None
        action = HesAction.DISCONNECT if method == 1 else HesAction.CONNECT
        new, error = remote_transition(int(s.control_state), int(s.control_mode), action)
        if error is not None:
            return _READ_WRITE_DENIED  # control_mode forbids it
        self.fleet.set_control_state(serial, HesControlState(new))
        return 0

    # --- inspection and faults (any thread) ----------------------------------------------------

    def _index(self, serial: str) -> int:
        i = self.fleet.index(serial)
        if i is None:
            raise KeyError(f"no meter {serial!r} in the simulated fleet")
        return i

    def relay_state(self, serial: str) -> HesMeterState:
        with self.lock:
            return self.fleet.state(serial)

    def set_meter(self, serial: str, mode: int, state: HesControlState) -> None:
        with self.lock:
            self.fleet.set_control_mode(serial, mode)
            self.fleet.set_control_state(serial, state)

    def _transition(self, serial: str, rule: Any) -> HesMeterState:
        with self.lock:
            s = self.fleet.state(serial)
            assert s.control_state is not None and s.control_mode is not None
            new = rule(int(s.control_state), int(s.control_mode))
            self.fleet.set_control_state(serial, HesControlState(new))
            return self.fleet.state(serial)

    def press_button(self, serial: str) -> HesMeterState:
        return self._transition(serial, button_transition)

    def local_disconnect(self, serial: str) -> HesMeterState:
        return self._transition(serial, local_disconnect)

    def local_reconnect(self, serial: str) -> HesMeterState:
        return self._transition(serial, local_reconnect)

    def refuse(self, serial: str, on: bool = True) -> None:
        with self.lock:
            (self.refused.add if on else self.refused.discard)(self._index(serial))

    def make_unreachable(self, serial: str, on: bool = True) -> None:
        with self.lock:
            (self.unreachable.add if on else self.unreachable.discard)(self._index(serial))

    def mute(self, serial: str, *, execute: bool = False, count: int | None = None, on: bool = True) -> None:
        """Swallow the answers to the meter's next `count` requests after an AARE (None: all of them)."""
        with self.lock:
            if on:
                self.muted[self._index(serial)] = (execute, count)
            else:
                self.muted.pop(self._index(serial), None)

    def stick(self, serial: str, *, report: bool = False, on: bool = True) -> None:
        with self.lock:
            if on:
                self.stuck[self._index(serial)] = report
            else:
                self.stuck.pop(self._index(serial), None)


class _Connection(asyncio.Protocol):
    def __init__(self, sim: DlmsFleetSim) -> None:
        self.sim = sim
        self.server = MeterServer(sim)
        self.transport: asyncio.Transport | None = None
        self.associated = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        with self.sim.lock:
            st = self.sim.stats
            st.connections += 1
            self.sim.open += 1
            st.max_concurrent = max(st.max_concurrent, self.sim.open)

    def connection_lost(self, exc: Exception | None) -> None:
        with self.sim.lock:
            self.sim.open -= 1

    def data_received(self, data: bytes) -> None:
        sim, t = self.sim, self.transport
        assert t is not None
        with sim.lock:
            index = self.server.index
            if index is None or not self.associated:
                reply = handle(self.server, data)
                index = self.server.index
                if index is not None and index in sim.unreachable:
                    t.abort()
                    return
                self.associated = index is not None and bool(reply)
            else:
                muted = sim.muted.get(index)
                if muted is not None:
                    execute, left = muted
                    if left is not None:
                        if left <= 1:
                            del sim.muted[index]
                        else:
                            sim.muted[index] = (execute, left - 1)
                    sim.stats.dropped_answers += 1
                    if execute:
                        handle(self.server, data)  # it runs; the answer is lost
                    return
                reply = handle(self.server, data)
                if data[8:9] == b"\x62":  # RLRQ
                    sim.stats.releases += 1
        if reply:
            t.write(reply)


class DlmsSimulatorThread:
    """The simulator's asyncio loop on a thread, listening on 127.0.0.1 (port 0 = any free one)."""

    def __init__(
        self,
        meters: int = 2000,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        password: bytes | None = None,
        wport_base: int = 256,
        modes: tuple[tuple[int, float], ...] = ((2, 1.0),),
        seed: int = 0,
    ) -> None:
        fleet = Fleet(meters, modes=modes, seed=seed)
        self.sim = DlmsFleetSim(fleet, password=password, wport_base=wport_base)
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return self._host

    def start(self, timeout: float = 10.0) -> DlmsSimulatorThread:
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="dlms-sim", daemon=True)
        self._thread.start()
        ready.result(timeout)
        return self

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        async def serve() -> None:
            try:
                self._loop = asyncio.get_running_loop()
                self._stopped = asyncio.Event()
                self._server = await self._loop.create_server(
                    lambda: _Connection(self.sim), self._host, self._port
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as e:
                ready.set_exception(e)
                raise
            ready.set_result(None)
            await self._stopped.wait()
            self._server.close()
            await self._server.wait_closed()

        asyncio.run(serve())

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def call(self, fn: Callable[[DlmsFleetSim], T]) -> T:
        """fn(simulator) under the simulator's lock, from any thread (as `SimulatorThread.call`, which
        runs it on its loop): fn reads or changes ``.fleet`` directly, never a method that locks."""
        with self.sim.lock:
            return fn(self.sim)

    def relay_states(self, serials: list[str]) -> list[HesMeterState]:
        return self.call(lambda s: [s.fleet.state(x) for x in serials])

    def __enter__(self) -> DlmsSimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
