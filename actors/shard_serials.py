"""A shard group's answers to the gateway's serial questions, in slices (actors/shard.py).

`MeterSerialsQuery` names up to a whole day of a head-end's serials. The host answers from its serial
index (domain/serials.py), built on the first question by a scan of every meter; both the build and
the answer are done in slices of at most `SERIAL_SLICE_S` seconds, one slice per handler run, the next
asked for with a note to self (`ShardSerialsSlice`), so a payment that arrives meanwhile waits for
one slice at most, never for a whole scan. Questions are answered in the order they came.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from domain.shard import MeterHost
from protocols.control import Address
from protocols.runtime import MeterSerialsFound, MeterSerialsQuery
from protocols.wire import Carrier

__all__ = ["SERIAL_SLICE_S", "SerialAnswers", "ShardSerialsSlice"]

log = logging.getLogger("jodo.shard")
#: seconds of index building or answering per handler run (the shard's mailbox waits that long at most)
SERIAL_SLICE_S = 0.02


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardSerialsSlice(Carrier):
    """A shard's note to itself: go on building the serial index or answering serial questions."""


@dataclass(slots=True)
class _Question:
    to: Address
    request_id: str
    head_end: str
    serials: list[str]
    start: int = 0
    found: list[tuple[str, str, bool]] = field(default_factory=list)


class SerialAnswers:
    """Serial questions waiting for their answer, oldest first."""

    def __init__(self) -> None:
        self.questions: deque[_Question] = deque()
        self.noted = False  # a ShardSerialsSlice is on its way
        self.longest_s = 0.0  # the longest slice so far (bench, tests)

    def __len__(self) -> int:
        return len(self.questions)

    def ask(self, msg: MeterSerialsQuery, sender: Address) -> None:
        self.questions.append(_Question(sender, msg.request_id, msg.head_end,
                                        list(dict.fromkeys(msg.serials))))

    def unserved(self, group: int) -> list[tuple[Address, MeterSerialsFound]]:
        """Every waiting question answered "not serving" (the group was dropped meanwhile)."""
        out = [(q.to, MeterSerialsFound(request_id=q.request_id, group=group, serving=False))
               for q in self.questions]
        self.questions.clear()
        return out

    def run(self, host: MeterHost, group: int, budget_s: float = SERIAL_SLICE_S
            ) -> list[tuple[Address, MeterSerialsFound]]:
        """One slice: build the index, then answer, for about ``budget_s``; the answers completed."""
        began = time.perf_counter()
        deadline = began + budget_s
        out: list[tuple[Address, MeterSerialsFound]] = []
        questions = self.questions
        first = True
        while questions:
            left = deadline - time.perf_counter()
            if left <= 0 and not first:
                break
            first = False
            if not host.serial_index_ready:
                host.build_serial_index(left)
                continue
            q = questions[0]
            try:
                found, q.start = host.serials_from(q.head_end, q.serials, q.start, left)
            except Exception:  # a bug, or a record that does not unpack: this question goes
                log.exception("serial question failed", extra={"request_id": q.request_id})
                questions.popleft()  # unanswered: the gateway's round times out (`unrouted`)
                continue
            q.found += found
            if q.start >= len(q.serials):
                questions.popleft()
                out.append((q.to, MeterSerialsFound(request_id=q.request_id, group=group,
                                                    found=tuple(q.found))))
        self.longest_s = max(self.longest_s, time.perf_counter() - began)
        return out
