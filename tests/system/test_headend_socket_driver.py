"""The socket driver the way a Thespian actor drives it: readability of `fileno()` and ticks only.

No thread of its own, no write-readiness: the loop below is what `receiveMessage` does with
`WatchMessage` (on_readable) and `WakeupMessage` (on_tick, re-armed with next_tick_in()).
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterable

import pytest

from headend.adapter import AdapterConfig
from headend.breaker import BreakerPhase, BreakerPolicy
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.sim.config import SimConfig
from headend.sim.server import SimulatorThread
from headend.socket_driver import HeadEndSocketDriver
from jodo.ports import free_port
from protocols.headend import HesAction, HesCommand

pytestmark = pytest.mark.system


class ActorLoop:
    """Watch the fd for readability, wake up when asked to: nothing else. Like the actor, it asks
    `next_tick_in()` after every call and keeps the earliest wakeup."""

    def __init__(self, driver: HeadEndSocketDriver) -> None:
        self.driver = driver
        self.outcomes: list[HeadEndOutcome] = []
        self.wakeups = 0
        self.wakeup_at = time.monotonic()

    def _rearm(self) -> None:
        delay = self.driver.next_tick_in()
        self.wakeup_at = min(self.wakeup_at, time.monotonic() + (1.0 if delay is None else delay))

    def submit(self, commands: Iterable[HesCommand]) -> None:
        self.outcomes += self.driver.submit(commands)
        self._rearm()

    def run_until(self, done: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < done and time.monotonic() < deadline:
            fd = self.driver.fileno()
            wait = min(max(0.0, self.wakeup_at - time.monotonic()), deadline - time.monotonic())
            readable, _, _ = select.select([fd] if fd is not None else [], [], [], max(0.0, wait))
            if readable:
                self.outcomes += self.driver.on_readable()  # WatchMessage
            elif time.monotonic() >= self.wakeup_at:
                self.wakeups += 1
                self.wakeup_at = float("inf")
                self.outcomes += self.driver.on_tick()  # WakeupMessage
            self._rearm()
        return len(self.outcomes) >= done


def test_an_actor_style_loop_connects_sends_and_gets_every_outcome() -> None:
    with SimulatorThread(SimConfig(meters=20_000, disconnected_fraction=1.0)) as sim:
        driver = HeadEndSocketDriver("127.0.0.1", sim.port, AdapterConfig(max_batch=2000))
        loop = ActorLoop(driver)
        try:
            expires = time.time() + 60
            loop.submit(HesCommand(f"c{i}", f"MPW{i:08d}", HesAction.CONNECT, expires) for i in range(20_000))
            assert loop.run_until(20_000, 30)
            assert {o.kind for o in loop.outcomes} == {OutcomeKind.CONNECTED}
            assert len({o.command_id for o in loop.outcomes}) == 20_000
        finally:
            driver.close()
        assert driver.fileno() is None


def test_a_refused_head_end_trips_the_breaker_without_spinning() -> None:
    policy = BreakerPolicy(failure_threshold=3, open_seconds=0.2, max_open_seconds=0.4)
    driver = HeadEndSocketDriver("127.0.0.1", free_port(), AdapterConfig(reconnect_base=0.01, breaker=policy))
    loop = ActorLoop(driver)
    try:
        loop.submit([HesCommand("a", "MPW00000001", HesAction.CONNECT, time.time() + 60)])
        loop.run_until(1, 1.5)
        assert loop.outcomes == []  # waiting, not failed
        assert driver.core.breaker.trips == 1
        assert driver.core.breaker.phase in (BreakerPhase.OPEN, BreakerPhase.HALF_OPEN)
        assert driver.core.stats.connection_losses <= 3 + 5  # three tries, then a probe per cooldown
        assert loop.wakeups < 300  # ticks follow the timers; no busy loop
    finally:
        driver.close()


def test_when_the_head_end_goes_away_the_fd_is_dropped_and_commands_resume_on_its_return() -> None:
    sim = SimulatorThread(SimConfig(meters=100, disconnected_fraction=1.0)).start()
    port = sim.port
    quick = AdapterConfig(
        reconnect_base=0.02,
        breaker=BreakerPolicy(failure_threshold=3, open_seconds=0.1, max_open_seconds=0.2),
    )
    driver = HeadEndSocketDriver("127.0.0.1", port, quick)
    loop = ActorLoop(driver)
    try:
        loop.submit([HesCommand("a", "MPW00000001", HesAction.CONNECT, time.time() + 60)])
        assert loop.run_until(1, 10)
        sim.stop()
        deadline = time.monotonic() + 10
        while driver.core.phase.value == "ready" and time.monotonic() < deadline:
            loop.run_until(2, 0.05)
        assert driver.core.phase.value != "ready"  # EOF seen: stopped watching a dead socket
        sim = SimulatorThread(SimConfig(meters=100, disconnected_fraction=1.0), port=port).start()
        loop.submit([HesCommand("b", "MPW00000002", HesAction.CONNECT, time.time() + 60)])
        assert loop.run_until(2, 10)
        assert [o.kind for o in loop.outcomes] == [OutcomeKind.CONNECTED, OutcomeKind.CONNECTED]
    finally:
        driver.close()
        sim.stop()
