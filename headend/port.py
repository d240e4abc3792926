"""`HeadEndDriver`: what a gateway actor drives, whatever sits behind it (socket adapter or fake).

Every call returns the final outcomes it produced (each command id ends exactly once, across all
calls). The actor calls `submit` for new commands, `on_readable` when `fileno()` is readable,
`on_tick` when `next_tick_in()` seconds have passed, and returns `ThespianWatch([fileno()])` from
every handler while `fileno()` is not None.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from headend.outcome import HeadEndOutcome
from protocols.headend import HesCommand

__all__ = ["HeadEndDriver"]


class HeadEndDriver(Protocol):
    def fileno(self) -> int | None: ...

    def submit(self, commands: Iterable[HesCommand]) -> list[HeadEndOutcome]: ...

    def on_readable(self) -> list[HeadEndOutcome]: ...

    def on_tick(self) -> list[HeadEndOutcome]: ...

    def next_tick_in(self, poll_io: bool = True) -> float | None: ...

    def close(self) -> None: ...
