"""A fake head-end gateway actor for actor-tier tests (simpleSystemBase has no sockets to watch).

`FakeGateway` answers every relay command at once as the meter would in control mode 2 (connect →
connected, disconnect → disconnected), or fails it when told to (`FakeGatewayMode`). It counts what
it executed per command id, so tests can check nothing ran twice.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from actors.base import JodoActor
from domain.commands import ReportRelayResult
from domain.effects import SendRelayCommand
from domain.enums import ControlState, RelayAction, RelayResultStatus
from protocols import codec
from protocols.control import Address
from protocols.relay import RelayBatchReceived, RelayCommandBatch, RelayResultBatch
from protocols.runtime import GatewayInit
from protocols.wire import Carrier

__all__ = ["FakeGateway", "FakeGatewayMode", "FakeGatewayQuery", "FakeGatewayReport"]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class FakeGatewayMode(Carrier):
    fail: bool = False  # answer FAILED (retryable) instead of executing
    silent: bool = False  # accept and never answer


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class FakeGatewayQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class FakeGatewayReport(Carrier):
    request_id: str
    executed: tuple[tuple[str, int], ...]  # command id → times executed
    pid: int


class FakeGateway(JodoActor):
    def __init__(self) -> None:
        super().__init__()
        self.mode = FakeGatewayMode()
        self.executed: Counter[str] = Counter()
        self.head_end = "unknown"

    def receiveMsg_GatewayInit(self, msg: GatewayInit, sender: Address) -> None:
        self.head_end = msg.head_end
        self.report_started(sender)

    def receiveMsg_FakeGatewayMode(self, msg: FakeGatewayMode, sender: Address) -> None:
        self.mode = msg

    def receiveMsg_FakeGatewayQuery(self, msg: FakeGatewayQuery, sender: Address) -> None:
        self.tell(sender, FakeGatewayReport(request_id=msg.request_id, executed=tuple(self.executed.items()),
                                            pid=os.getpid()))

    def receiveMsg_RelayCommandBatch(self, msg: RelayCommandBatch, sender: Address) -> None:
        self.tell(sender, RelayBatchReceived(batch_id=msg.batch_id, head_end=msg.head_end))
        if self.mode.silent:
            return
        reports: list[ReportRelayResult] = []
        commands: list[object] = codec.decode_many(msg.payload)
        for e in commands:
            if not isinstance(e, SendRelayCommand):
                continue
            if self.mode.fail:
                reports.append(ReportRelayResult(
                    account=e.account, command_id=e.command_id, status=RelayResultStatus.FAILED,
                    error_code="no_communication", retryable=True,
                ))
                continue
            self.executed[e.command_id] += 1
            on = e.action is RelayAction.CONNECT
            reports.append(ReportRelayResult(
                account=e.account, command_id=e.command_id, status=RelayResultStatus.PROCESSED,
                control_state=ControlState.CONNECTED if on else ControlState.DISCONNECTED, output_state=on,
            ))
        if reports:
            self.tell(sender, RelayResultBatch(batch_id=uuid.uuid4().hex, head_end=self.head_end,
                                               payload=codec.encode_many(reports), count=len(reports)))

    def receiveUnrecognizedMessage(self, msg: Any, sender: Address) -> None:
        pass
