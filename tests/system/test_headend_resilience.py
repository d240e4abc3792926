"""The reference adapter against the simulator over real sockets on 127.0.0.1: faults, an outage,
expiry, the consumer's button, and the simulator as a separate process.

The outage test runs both sides on one `FastClock` (20x): its 10 s outage is 10 simulated seconds,
0.5 s of test time. Everything else runs on the wall clock with short timeouts. Nothing sleeps to
wait: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headend.adapter import AdapterConfig
from headend.breaker import BreakerPhase, BreakerPolicy
from headend.clock import Clock, FastClock, WallClock
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.sim.config import LatencySpec, OutageMode, SimConfig
from headend.sim.control import inspect_meters, press_buttons
from headend.sim.server import SimulatorThread
from headend.threaded import ThreadedHeadEndClient
from protocols.headend import HesAction, HesCommand, HesControlState

pytestmark = pytest.mark.system


def serial(i: int) -> str:
    return f"MPW{i:08d}"


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)  # a poll interval, not a wait for the thing itself


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    poll(lambda: set(threading.enumerate()) <= before, 5.0, "test threads to stop")


def exactly_once(outcomes: list[HeadEndOutcome], commands: list[HesCommand]) -> dict[str, HeadEndOutcome]:
    ids = [o.command_id for o in outcomes]
    duplicates = [cid for cid, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"ended twice: {duplicates[:5]}"
    assert set(ids) == {c.command_id for c in commands}
    return {o.command_id: o for o in outcomes}


def run_pair(
    config: SimConfig, adapter: AdapterConfig, clock: Clock | None = None
) -> tuple[SimulatorThread, ThreadedHeadEndClient]:
    sim = SimulatorThread(config, clock=clock).start()
    client = ThreadedHeadEndClient("127.0.0.1", sim.port, adapter, clock=clock).start()
    return sim, client


def test_with_failures_drops_duplicates_and_reordering_every_command_ends_exactly_once() -> None:
    config = SimConfig(
        meters=5000,
        seed=11,
        modes=((2, 0.9), (1, 0.1)),
        disconnected_fraction=1.0,
        latency=LatencySpec("uniform", (0.0, 0.05)),
        failure_rate=0.05,
        drop_rate=0.05,
        duplicate_rate=0.05,
        reorder_rate=0.2,
        reorder_window=0.05,
    )
    adapter = AdapterConfig(command_timeout=0.5, read_timeout=0.5, retry_base=0.05, retry_max=0.2)
    sim, client = run_pair(config, adapter)
    try:
        expires = time.time() + 60
        commands = [HesCommand(f"c{i}", serial(i), HesAction.CONNECT, expires) for i in range(3000)]
        client.submit(commands)
        assert client.wait_for_outcomes(len(commands), 30), client.error
        poll(lambda: client.inspect(lambda c: c.pending) == 0, 5, "the core to settle")
        outcomes = exactly_once(client.outcomes(), commands)
        states = dict(
            zip((c.meter for c in commands), sim.relay_states([c.meter for c in commands]), strict=True)
        )
        for o in outcomes.values():
            truth = states[o.meter].control_state
            if o.kind is OutcomeKind.CONNECTED:
                assert truth is HesControlState.CONNECTED
            elif o.kind is OutcomeKind.READY_FOR_RECONNECTION:
                assert truth is HesControlState.READY_FOR_RECONNECTION
            else:
                assert o.kind is OutcomeKind.FAILED, o
        kinds = Counter(o.kind for o in outcomes.values())
        assert kinds[OutcomeKind.CONNECTED] + kinds[OutcomeKind.READY_FOR_RECONNECTION] > 2850
        stats = sim.stats()
        assert stats.dropped > 0 and stats.duplicated > 0 and stats.failed > 0
        assert client.inspect(lambda c: c.stats.stale_results) > 0  # duplicates were seen and ignored
    finally:
        client.stop()
        sim.stop()


@pytest.mark.parametrize("mode", [OutageMode.REFUSE, OutageMode.CLOSE])
def test_a_10_s_outage_opens_the_breaker_loses_no_command_and_all_complete_after(mode: OutageMode) -> None:
    clock = FastClock(speed=20.0)  # 10 simulated seconds pass in 0.5 s
    config = SimConfig(
        meters=3000, disconnected_fraction=1.0, latency=LatencySpec("uniform", (0.0, 0.5)), outage_mode=mode
    )
    adapter = AdapterConfig(
        command_timeout=4.0,
        read_timeout=4.0,
        ack_timeout=4.0,
        connect_timeout=2.0,
        handshake_timeout=2.0,
        max_batch=200,
        rate_limit=2000.0,
        breaker=BreakerPolicy(failure_threshold=3, open_seconds=1.0, max_open_seconds=4.0),
    )
    sim, client = run_pair(config, adapter, clock)
    try:
        expires = clock.now() + 600
        first = [HesCommand(f"a{i}", serial(i), HesAction.CONNECT, expires) for i in range(2000)]
        client.submit(first)
        client.wait_for_outcomes(300, 10)
        sim.begin_outage(10.0)
        outage_began = clock.now()
        later = [HesCommand(f"b{i}", serial(2000 + i), HesAction.CONNECT, expires) for i in range(1000)]
        client.submit(later)  # while the head-end is down
        poll(
            lambda: client.inspect(lambda c: c.breaker.phase) is BreakerPhase.OPEN, 10, "the breaker to open"
        )
        assert clock.now() - outage_began < 10.0
        assert client.wait_for_outcomes(3000, 30), client.error
        outcomes = exactly_once(client.outcomes(), first + later)
        assert Counter(o.kind for o in outcomes.values()) == {OutcomeKind.CONNECTED: 3000}
        assert max(o.at for o in outcomes.values()) > outage_began + 10.0  # some finished only after it
        assert client.inspect(lambda c: c.breaker.phase) is BreakerPhase.CLOSED
        connects = client.inspect(lambda c: c.stats.connects + c.stats.connection_losses)
        assert connects < 40  # a few probes over 10 s, not a retry storm
        states = sim.relay_states([serial(i) for i in range(3000)])
        assert all(s.control_state is HesControlState.CONNECTED for s in states)
    finally:
        client.stop()
        sim.stop()


def test_expired_commands_are_never_executed() -> None:
    clock = FastClock(speed=10.0)
    config = SimConfig(meters=1000, disconnected_fraction=1.0, latency=LatencySpec("fixed", (1.0,)))
    adapter = AdapterConfig(command_timeout=3.0, read_timeout=3.0, retry_base=0.1)
    sim, client = run_pair(config, adapter, clock)
    try:
        now = clock.now()
        already = [HesCommand(f"x{i}", serial(i), HesAction.CONNECT, now - 1) for i in range(100)]
        in_flight = [HesCommand(f"y{i}", serial(100 + i), HesAction.CONNECT, now + 0.5) for i in range(100)]
        fine = [HesCommand(f"z{i}", serial(200 + i), HesAction.CONNECT, now + 60) for i in range(100)]
        client.submit(already + in_flight + fine)
        assert client.wait_for_outcomes(300, 20), client.error
        outcomes = exactly_once(client.outcomes(), already + in_flight + fine)
        for c in already + in_flight:
            assert outcomes[c.command_id].kind is OutcomeKind.EXPIRED
        for c in fine:
            assert outcomes[c.command_id].kind is OutcomeKind.CONNECTED
        states = sim.relay_states([serial(i) for i in range(300)])
        assert [s.control_state for s in states[:200]] == [HesControlState.DISCONNECTED] * 200
        assert all(s.control_state is HesControlState.CONNECTED for s in states[200:])
        stats = sim.stats()
        assert stats.expired == 100  # the sim took the in-flight ones and refused to run them
        assert client.inspect(lambda c: c.stats.commands_sent) == 200  # the stale ones never left
    finally:
        client.stop()
        sim.stop()


def test_a_mode_1_meter_ends_awaiting_the_button_and_a_press_ends_connected() -> None:
    config = SimConfig(meters=100, modes=((1, 1.0),), disconnected_fraction=1.0)
    sim, client = run_pair(config, AdapterConfig())
    try:
        m = serial(7)
        client.submit([HesCommand("pay-1", m, HesAction.CONNECT, time.time() + 60)])
        assert client.wait_for_outcomes(1, 10)
        (o,) = client.outcomes()
        assert o.kind is OutcomeKind.READY_FOR_RECONNECTION and o.awaiting_button
        assert sim.relay_state(m).output_state is False
        assert sim.press_button(m).control_state is HesControlState.CONNECTED
        client.submit([HesCommand("check-1", m, HesAction.READ, time.time() + 60)])
        assert client.wait_for_outcomes(2, 10)
        assert client.outcomes()[1].kind is OutcomeKind.CONNECTED
    finally:
        client.stop()
        sim.stop()


SIM_ARGS = [
    "--meters",
    "1000",
    "--modes",
    "1=1",
    "--disconnected-fraction",
    "1",
    "--latency",
    "uniform:0,0.02",
]


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port_file = tmp_path / "port"
    with open(tmp_path / "sim.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headend.sim", "--port", "0", "--port-file", str(port_file), *SIM_ARGS],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            poll(lambda: port_file.exists() or proc.poll() is not None, 20, "the simulator to listen")
            assert proc.poll() is None, (tmp_path / "sim.log").read_text()
            yield proc, int(port_file.read_text())
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_a_simulator_in_another_process_is_driven_and_inspected_over_its_port(
    sim_process: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = sim_process
    m = serial(42)
    with ThreadedHeadEndClient("127.0.0.1", port, AdapterConfig(), clock=WallClock()) as client:
        client.submit([HesCommand("p1", m, HesAction.CONNECT, time.time() + 60)])
        assert client.wait_for_outcomes(1, 10)
        assert client.outcomes()[0].kind is OutcomeKind.READY_FOR_RECONNECTION
    (state,) = inspect_meters("127.0.0.1", port, [m])
    assert (state.control_state, state.output_state, state.control_mode) == (
        HesControlState.READY_FOR_RECONNECTION,
        False,
        1,
    )
    (pressed,) = press_buttons("127.0.0.1", port, [m])
    assert pressed.control_state is HesControlState.CONNECTED
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
