"""Clocks for the head-end adapter and simulator: one time base, injectable.

Everything in `headend` reads time only through a `Clock` (or takes `now` as an argument), in epoch
seconds, because `expires_at` crosses process boundaries. `WallClock` is production; `FastClock` runs
simulated time faster than real time (a 10 s outage in 0.5 s), shared in-process by a simulator and an
adapter; `ManualClock` moves only when a test advances it.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "FastClock", "ManualClock", "WallClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Current time, epoch seconds on this clock."""
        ...

    def to_real(self, seconds: float) -> float:
        """Real seconds it takes for `seconds` of this clock to pass (for sleeps and select timeouts)."""
        ...


class WallClock:
    """`time.time()`: the only clock two processes agree on."""

    def now(self) -> float:
        return time.time()

    def to_real(self, seconds: float) -> float:
        return seconds


class FastClock:
    """Simulated time running `speed` times faster than real time, starting at `start` (default now)."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = time.time() if start is None else start
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._mono) * self.speed

    def to_real(self, seconds: float) -> float:
        return seconds / self.speed


class ManualClock:
    """Moves only on `advance`/`set`; thread-safe. `to_real` answers a short poll interval."""

    def __init__(self, start: float = 1_700_000_000.0, poll: float = 0.001) -> None:
        self._t = start
        self._poll = poll
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        with self._lock:
            self._t = t

    def to_real(self, seconds: float) -> float:
        return min(max(seconds, 0.0), self._poll)
