"""The clock an actor reads: wall time, or a manual clock tests and the demo move forward."""

from __future__ import annotations

import time

__all__ = ["ActorClock"]


class ActorClock:
    """Wall time, or a manual clock that moves only forward by `ClockSet`."""

    def __init__(self, manual: bool, start_at: int) -> None:
        self.manual = manual
        self._now = start_at or int(time.time())

    def now(self) -> int:
        return self._now if self.manual else int(time.time())

    def set(self, now: int) -> None:
        self._now = max(self._now, now)
