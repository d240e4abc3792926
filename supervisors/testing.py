"""Sample supervised actors for tests and demos (importable, as Thespian requires).

- `CrashableWorker`: starts from `SampleInit` (or a bare ChildStart), crashes, ends or blocks on command,
  answers `SamplePing` with its pid.
- `AddressRecorder`: subscribes to its supervisor's child addresses and reports what it learnt.
- `RecordingDeadLetterSink` (factory `recording_sink`) and `IN_PROCESS_EVENTS`: module-level records,
  readable only when the actors run in the test's own process (simpleSystemBase).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from actors.facade import Address
from domain.supervision import ChildSpec
from protocols.control import ChildAddressChanged, ChildStart, SubscribeChildAddresses
from protocols.wire import Carrier
from supervisors.child import SupervisedChild
from supervisors.deadletters import DeadLetterEvent

__all__ = [
    "IN_PROCESS_EVENTS",
    "RECORDED_LETTERS",
    "AddressRecorder",
    "CrashableWorker",
    "RecordingDeadLetterSink",
    "SampleBlock",
    "SampleCrash",
    "SampleCrashMode",
    "SampleInit",
    "SamplePing",
    "SamplePong",
    "SampleRecorderQuery",
    "SampleRecorderReport",
    "recording_sink",
    "sample_init",
    "sample_init_failing_first",
]

#: ("start" | "stop", worker name) in the order they happened (in-process systems only).
IN_PROCESS_EVENTS: list[tuple[str, str]] = []
#: Every letter any RecordingDeadLetterSink got (in-process systems only).
RECORDED_LETTERS: list[DeadLetterEvent] = []


class SampleCrashMode(StrEnum):
    EXIT = "exit"  # exit without telling the supervisor: a crash
    NORMAL = "normal"  # ChildStopping, then exit
    RAISE = "raise"  # raise in the handler: Thespian retries, then PoisonMessage to the sender


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SampleInit(Carrier):
    name: str
    fail_on_init: bool = False


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SampleCrash(Carrier):
    mode: SampleCrashMode = SampleCrashMode.EXIT


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SampleBlock(Carrier):
    """Block the handler this long (a stuck actor that will overrun its shutdown time)."""

    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SamplePing(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SamplePong(Carrier):
    request_id: str
    name: str
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SampleRecorderQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SampleRecorderReport(Carrier):
    """What an AddressRecorder knows: child id → (address, generation), newest generation kept."""

    request_id: str
    entries: tuple[tuple[str, Address, int], ...]
    updates: int


def sample_init(spec: ChildSpec, restarts: int) -> SampleInit:
    """An InitFactory target: names the worker after its id and restart count."""
    return SampleInit(name=f"{spec.id}#{restarts}")


def sample_init_failing_first(spec: ChildSpec, restarts: int) -> SampleInit:
    """An InitFactory target whose first init fails (a PoisonMessage for the supervisor)."""
    return SampleInit(name=f"{spec.id}#{restarts}", fail_on_init=restarts == 0)


class RecordingDeadLetterSink:
    def record(self, letter: DeadLetterEvent) -> None:
        RECORDED_LETTERS.append(letter)

    def count(self) -> int:
        return len(RECORDED_LETTERS)


def recording_sink() -> RecordingDeadLetterSink:
    return RecordingDeadLetterSink()


class CrashableWorker(SupervisedChild):
    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def receiveMsg_SampleInit(self, msg: SampleInit, sender: Address) -> None:
        if msg.fail_on_init:
            raise RuntimeError(f"{msg.name}: told to fail on init")
        self.name = msg.name
        IN_PROCESS_EVENTS.append(("start", msg.name))
        self.report_started(sender)

    def receiveMsg_ChildStart(self, msg: ChildStart, sender: Address) -> None:
        self.name = msg.child_id
        IN_PROCESS_EVENTS.append(("start", msg.child_id))
        self.report_started(sender)

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        IN_PROCESS_EVENTS.append(("stop", self.name))

    def receiveMsg_SampleCrash(self, msg: SampleCrash, sender: Address) -> None:
        if msg.mode is SampleCrashMode.RAISE:
            raise RuntimeError(f"{self.name}: told to raise")
        if msg.mode is SampleCrashMode.NORMAL:
            self.stop_normally()
        else:
            self.exit_self()

    def receiveMsg_SampleBlock(self, msg: SampleBlock, sender: Address) -> None:
        time.sleep(msg.seconds)  # deliberately stuck: exercises the supervisor's shutdown timeout

    def receiveMsg_SamplePing(self, msg: SamplePing, sender: Address) -> None:
        self.tell(sender, SamplePong(request_id=msg.request_id, name=self.name, pid=os.getpid()))


class AddressRecorder(SupervisedChild):
    def __init__(self) -> None:
        super().__init__()
        self.book: dict[str, tuple[Address, int]] = {}
        self.updates = 0

    def receiveMsg_ChildStart(self, msg: ChildStart, sender: Address) -> None:
        self.tell(sender, SubscribeChildAddresses())
        self.report_started(sender)

    def receiveMsg_ChildAddressChanged(self, msg: ChildAddressChanged, sender: Address) -> None:
        known = self.book.get(msg.child_id)
        if known is None or known[1] <= msg.generation:
            self.book = {**self.book, msg.child_id: (msg.address, msg.generation)}
        self.updates += 1

    def receiveMsg_SampleRecorderQuery(self, msg: SampleRecorderQuery, sender: Address) -> None:
        entries = tuple((cid, addr, gen) for cid, (addr, gen) in sorted(self.book.items()))
        report = SampleRecorderReport(request_id=msg.request_id, entries=entries, updates=self.updates)
        self.tell(sender, report)

    def receiveUnrecognizedMessage(self, msg: Any, sender: Address) -> None:
        pass
