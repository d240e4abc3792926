"""Where dead letters go: messages that poisoned an actor, or were sent to one that was gone.

DESIGN §5: dead letters are stored and counted, never dropped. Storage lives elsewhere: it plugs in as
a `DeadLetterSink` named by a factory path in ``SupervisorInit.dead_letter_sink``. The default
`LoggingDeadLetterSink` logs each letter and counts them by kind and message type.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "DeadLetterEvent",
    "DeadLetterKind",
    "DeadLetterSink",
    "LoggingDeadLetterSink",
    "load_sink",
]

def _log() -> logging.Logger:
    # Looked up per use: Thespian replaces the logging tree in each actor process after fork, and a
    # logger cached at import (in the starting process) would bypass the system's log handlers.
    return logging.getLogger("jodo.deadletters")


class DeadLetterKind(StrEnum):
    POISON = "poison"  # the target raised on it twice (Thespian's PoisonMessage)
    UNDELIVERABLE = "undeliverable"  # the target was gone (Thespian's DeadEnvelope)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeadLetterEvent:
    """One dead letter. ``message`` is the original object; ``details`` a traceback or reason."""

    kind: DeadLetterKind
    message: object
    message_type: str
    target: str
    details: str
    at: float  # wall-clock epoch seconds, as recorded by the supervisor

    def __repr__(self) -> str:
        return f"<DeadLetterEvent {self.kind} {self.message_type}>"


@runtime_checkable
class DeadLetterSink(Protocol):
    """Receives every dead letter a supervisor sees. Must not raise: a raise re-runs the handler."""

    def record(self, letter: DeadLetterEvent) -> None: ...

    def count(self) -> int:
        """Letters recorded so far by this sink (reported in supervisor status)."""
        ...


class LoggingDeadLetterSink:
    """The default sink: a warning per letter, counts by (kind, message type) for status and metrics."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, letter: DeadLetterEvent) -> None:
        self.counts[(letter.kind.value, letter.message_type)] += 1
        _log().warning(
            "dead letter (%s) %s to %s: %s",
            letter.kind.value,
            letter.message_type,
            letter.target,
            letter.details.strip().splitlines()[-1] if letter.details.strip() else "-",
        )

    def count(self) -> int:
        return sum(self.counts.values())


def load_sink(path: str) -> DeadLetterSink:
    """Build the sink named ``"module:factory"`` (empty: `LoggingDeadLetterSink`)."""
    if not path:
        return LoggingDeadLetterSink()
    module, _, name = path.partition(":")
    factory = getattr(importlib.import_module(module), name)
    sink = factory()
    if not isinstance(sink, DeadLetterSink):
        raise TypeError(f"{path} did not return a DeadLetterSink (record/count)")
    return sink
