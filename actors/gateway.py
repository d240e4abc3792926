"""The HeadEndGateway actor: one per head-end system, a thin shell around the adapter's socket driver.

The mailbox never blocks on I/O (THESPIAN.md, non-blocking I/O): the head-end socket is watched with
``ThespianWatch`` (returned from EVERY receive, or the socket silently stops being read) and one
``wakeupAfter`` tick drives timeouts, retries and the breaker. Commands arrive from shards in
`RelayCommandBatch`es (acknowledged at once with `RelayBatchReceived`); final outcomes go back as
`ReportRelayResult` meter commands in `RelayResultBatch`es to the latest address each group used.

A command is identified by (command_id, attempt): a shard re-sends in-flight commands after any
restart, so a send already running is not started again, and one already finished is answered from
the outcome cache without touching the meter again.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import Counter, OrderedDict, defaultdict
from typing import Any, cast

from thespian.actors import ThespianWatch, WakeupMessage, WatchMessage

from actors.base import JodoActor
from actors.directory import Directory
from actors.gateway_reads import ReadsRouter
from actors.guard_shell import GatewayGuard, GroupReport
from domain.commands import ReportRelayResult
from domain.effects import CancelRelayCommand, SendRelayCommand
from domain.enums import ControlState, RelayAction, RelayResultStatus
from domain.guard import GuardPolicy, guarded
from headend.adapter import AdapterConfig
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.socket_driver import HeadEndSocketDriver
from headend.threaded import LoopDriver
from protocols import codec
from protocols.cim import CimGatewayOptions
from protocols.cluster import RateShare
from protocols.control import Address, ChildAddressChanged, SubscribeChildAddresses
from protocols.dlms import DlmsGatewayOptions
from protocols.headend import HesAction, HesCommand
from protocols.relay import RelayBatchReceived, RelayCommandBatch, RelayResultBatch
from protocols.runtime import (
    CrashActor,
    GatewayInit,
    GatewayStatus,
    GatewayStatusQuery,
    MeterCommandBatchResult,
    MeterSerialsFound,
    RelayResultsApplied,
)
from storage.sqlite_guard import GuardStore
from supervisors.supervisor import ROOT_NAME

__all__ = ["HeadEndGateway", "report_of"]

log = logging.getLogger("jodo.gateway")
_TICK = "jodo-gateway-tick"
_MAX_TICK = 0.5
# RelayResultBatches per shard group not yet journaled by the shard (`RelayResultsApplied`). Thespian's
# TCP transport sends one message per target at a time: past the window, results wait here and leave
# together as one batch (one shard commit) instead of queueing in the transport as many small ones.
RESULT_WINDOW = 2
RESULT_ACK_TIMEOUT = 10.0  # seconds; an acknowledgement this late is given up (a restarted shard)
_ACTIONS = {RelayAction.CONNECT: HesAction.CONNECT, RelayAction.DISCONNECT: HesAction.DISCONNECT,
            RelayAction.READ: HesAction.READ, RelayAction.CREDIT: HesAction.CREDIT}
_CREDIT = RelayAction.CREDIT
_HES_CREDIT = HesAction.CREDIT


def report_of(account: str, command_id: str, o: HeadEndOutcome) -> ReportRelayResult:
    """The meter command that tells a meter how its relay command ended."""
    if o.succeeded:
        return ReportRelayResult(
            account=account, command_id=command_id, status=RelayResultStatus.PROCESSED,
            control_state=ControlState(int(o.control_state)) if o.control_state is not None else None,
            output_state=o.output_state,
        )
    if o.kind is OutcomeKind.EXPIRED:
        return ReportRelayResult(account=account, command_id=command_id, status=RelayResultStatus.EXPIRED)
    if o.kind is OutcomeKind.REJECTED:
        return ReportRelayResult(account=account, command_id=command_id, status=RelayResultStatus.REJECTED,
                                 error_code=o.reason)
    if o.kind is OutcomeKind.APPLIED:  # a credit update the meter took (domain/credit.py)
        return ReportRelayResult(account=account, command_id=command_id, status=RelayResultStatus.PROCESSED)
    return ReportRelayResult(account=account, command_id=command_id, status=RelayResultStatus.FAILED,
                             error_code=o.error, retryable=o.retryable)


class HeadEndGateway(JodoActor):
    def __init__(self) -> None:
        super().__init__()
        self.init: GatewayInit | None = None
        self.driver: LoopDriver | None = None
        self.reply_to: dict[int, Address] = {}
        self.running: dict[str, tuple[str, int, float]] = {}  # wire id → (account, group, submit wall)
        self.finished: OrderedDict[str, ReportRelayResult] = OrderedDict()  # wire id → result
        self.results: dict[int, list[ReportRelayResult]] = defaultdict(list)
        self.results_unacked: dict[int, dict[str, float]] = defaultdict(dict)  # group → batch id → sent
        self.tick_armed = False
        self.tick_due = 0.0
        self.counts: dict[str, int] = defaultdict(int)
        self.guard: GatewayGuard | None = None  # the mass-disconnect guard (actors/guard_shell.py)
        self.shards = Directory(follow="shards")  # where consumption reads go (actors/gateway_reads.py)
        self.reads: ReadsRouter | None = None

    def receiveMessage(self, msg: Any, sender: Address) -> Any:
        try:
            super().receiveMessage(msg, sender)
        finally:
            self._send_results()
            self._arm_tick()
        fd = None if self.driver is None else self.driver.fileno()
        return ThespianWatch([fd] if fd is not None else [])

    # ------------------------------------------------------------ start

    def receiveMsg_GatewayInit(self, msg: GatewayInit, sender: Address) -> None:
        if self.driver is not None:
            return
        config = AdapterConfig(
            client_name=f"jodo-gateway-{msg.head_end}", command_timeout=msg.command_timeout,
            max_attempts=msg.max_attempts, rate_limit=msg.rate_limit,
        )
        self.init = msg
        self.use_data_dir(msg.data_dir or None)
        self.count_process()
        self.driver = (dlms_driver(msg.host, msg.port, msg.dlms, config) if msg.dlms is not None
                       else cim_driver(msg.cim) if msg.cim is not None
                       else HeadEndSocketDriver(msg.host, msg.port, config))
        if msg.guard and msg.data_dir:
            self.guard = GatewayGuard(msg.head_end, GuardPolicy(**json.loads(msg.guard)),
                                      GuardStore.in_dir(msg.data_dir), time.time())
        self._guard_gauges()  # every guard series reads 0 from the start
        self.reads = ReadsRouter(msg.head_end)
        self.tell(self.createActor("supervisors.supervisor.RootSupervisor", globalName=ROOT_NAME),
                  self.shards.subscribe_message())
        self.report_started(sender)
        self._outcomes(self.driver.on_tick())

    # ------------------------------------------------------------ commands in, outcomes out

    def receiveMsg_RelayCommandBatch(self, msg: RelayCommandBatch, sender: Address) -> None:
        driver = self._ready()
        if self.reply_to.get(msg.group) != sender:
            self.results_unacked[msg.group].clear()  # a new shard: the old one's window is moot
        self.reply_to[msg.group] = sender
        self.tell(sender, RelayBatchReceived(batch_id=msg.batch_id, head_end=msg.head_end))
        try:
            effects: list[object] = codec.decode_many(msg.payload, trusted=True)
        except codec.CodecError as exc:
            self.undecodable(msg, exc)
            return
        wall = time.time()
        submit: list[HesCommand] = []
        fresh: list[SendRelayCommand] = []
        for e in effects:
            if isinstance(e, CancelRelayCommand):
                # the reference protocol has no cancel: expiry and the shard's state cover it; a
                # disconnect the guard keeps leaves its wave
                if self.guard is not None:
                    self.guard.cancel(e.account, e.command_id, wall)
                continue
            if not isinstance(e, SendRelayCommand):
                continue
            wire_id = f"{e.command_id}#{e.attempt}"
            done = self.finished.get(wire_id)
            if done is not None:
                self.results[msg.group].append(done)
                continue
            if wire_id in self.running:
                continue
            fresh.append(e)
        if self.guard is not None:
            fresh, kept = self.guard.offer(fresh, msg.group, wall)
            self._guard_reports(kept)
        attempted: Counter[str] = Counter()
        for e in fresh:
            wire_id = f"{e.command_id}#{e.attempt}"
            if wire_id in self.running:
                continue  # twice in one batch
            # expiry on our clock: the shard's clock may be a simulated one
            expires = wall + (e.expires_at - msg.now) if msg.now else float(e.expires_at)
            if self.guard is not None and guarded(e.action, e.origin) and expires <= wall:
                # a held disconnect re-sent after a restart, stale now: the meter issues it afresh
                self._guard_reports([(msg.group, ReportRelayResult(
                    account=e.account, command_id=e.command_id, status=RelayResultStatus.RELEASED))])
                continue
            self.running[wire_id] = (e.account, msg.group, wall)
            submit.append(HesCommand(command_id=wire_id, meter=e.meter_serial, action=_ACTIONS[e.action],
                                     expires_at=expires, credit_paise=e.balance_paise))
            attempted[str(e.action)] += 1
        credits = attempted.pop(str(_CREDIT), 0)
        if credits:
            self.metric("meter_credit_updates", self._head_end(), "sent", credits)
        for action, count in attempted.items():  # one increment per action and batch
            self.metric("relay_command_attempted", self._head_end(), action, count)
        if submit:
            self._outcomes(driver.submit(submit))

    def receiveMsg_RateShare(self, msg: RateShare, sender: Address) -> None:
        driver = self._ready()
        driver.core.set_rate_share(min(1.0, max(0.0, msg.share)))
        log.info("rate share", extra={"head_end": self._head_end(), "share": round(msg.share, 4)})

    def receiveMsg_RelayResultsApplied(self, msg: RelayResultsApplied, sender: Address) -> None:
        self.results_unacked[msg.group].pop(msg.batch_id, None)  # the results waiting leave on return

    def receiveMsg_WatchMessage(self, msg: WatchMessage, sender: Address) -> None:
        if self.driver is not None:
            self._outcomes(self.driver.on_readable())
            self._consumption()

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Address) -> None:
        if msg.payload != _TICK:
            return
        self.tick_armed = False
        if self.driver is not None:
            self._outcomes(self.driver.on_tick())
            self.metric("set_breaker_state", self._head_end(), str(self.driver.core.breaker_phase))
            family = "cim_events" if self.init is not None and self.init.cim is not None else "dlms_events"
            for event, n in getattr(self.driver, "take_events", list)():  # DLMS and CIM
                self.metric(family, self._head_end(), event, n)
            self.metric("set_relay_commands_pending", self._head_end(), len(self.running))
            self.sample_memory()
        if self.reads is not None and self.reads.busy:
            self._route(self.reads.tick(self._groups(), time.monotonic()))
        guard = self.guard
        if guard is not None and guard.due(time.time()):
            self._guard_reports(guard.tick(time.time()))
            self._guard_gauges()

    # ------------------------------------------------------------ consumption reads (gateway_reads.py)

    def _consumption(self) -> None:
        take = getattr(self.driver.core, "take_consumption", None) if self.driver is not None else None
        reads = take() if take is not None else []
        if reads and self.reads is not None:
            self._route(self.reads.add(reads, self._groups(), time.monotonic()))

    def receiveMsg_MeterSerialsFound(self, msg: MeterSerialsFound, sender: Address) -> None:
        if self.reads is not None:
            self._route(self.reads.answer(msg, self._groups(), time.monotonic()))

    def receiveMsg_MeterCommandBatchResult(self, msg: MeterCommandBatchResult, sender: Address) -> None:
        if self.reads is None:
            return
        if msg.rejected:
            log.warning("head-end reads refused by the shard", extra={
                "head_end": self._head_end(), "group": msg.group, "batch_id": msg.batch_id,
                "accepted": msg.accepted, "refused": len(msg.rejected),
                "first": [why for _, why in msg.rejected[:3]]})
        self._route(self.reads.batch_answered(msg.group, msg.batch_id, time.monotonic()))

    def receiveMsg_ChildAddressChanged(self, msg: ChildAddressChanged, sender: Address) -> None:
        learnt = self.shards.learn(msg)
        if learnt is not None and not isinstance(learnt, tuple):
            self.tell(learnt, SubscribeChildAddresses())

    def _groups(self) -> dict[int, Address]:
        return {int(child.removeprefix("shard-")): address
                for child, (_, address) in self.shards.peers.items() if child.startswith("shard-")}

    def _route(self, sends: list[tuple[int, object]]) -> None:
        """Tell each shard group its messages; log and count the rounds that ended."""
        groups = self._groups()
        for group, message in sends:
            target = groups.get(group)
            if target is not None:
                self.tell(target, message)
        router = self.reads
        if router is None:
            return
        for end in router.ended:
            for outcome, n in end.counts.items():
                self.metric("headend_reads", self._head_end(), outcome, n)
            if end.unknown:
                log.warning("head-end reads for unknown serials (no shard group has them on this head-end)",
                            extra={"head_end": self._head_end(), "count": len(end.unknown),
                                   "serials": list(end.unknown[:20])})
        router.ended.clear()

    def _guard_reports(self, reports: list[GroupReport]) -> None:
        for group, report in reports:
            self.results[group].append(report)

    def _guard_gauges(self) -> None:
        held, kept, paused = self.guard.gauges() if self.guard is not None else (0, 0, False)
        self.metric("set_disconnect_guard", self._head_end(), held, kept, paused)
        if self.guard is not None:
            left, errors = self.guard.drain()
            self.metric("disconnects_released", self._head_end(), left)
            self.metric("disconnect_guard_failed", self._head_end(), errors)

    def _outcomes(self, outcomes: list[HeadEndOutcome]) -> None:
        wall = time.time()
        rounds: list[float] = []
        for o in outcomes:
            meta = self.running.pop(o.command_id, None)
            if meta is None:
                continue
            account, group, submitted = meta
            command_id = o.command_id.rsplit("#", 1)[0]
            report = report_of(account, command_id, o)
            self.finished[o.command_id] = report
            self.results[group].append(report)
            self.counts[str(o.kind)] += 1
            if o.action is _HES_CREDIT:
                self.metric("meter_credit_updates", self._head_end(), str(o.kind), 1)
            rounds.append(wall - submitted)
        if rounds:  # one call per batch of outcomes (the labels resolved once)
            self.metric("headend_roundtrip", self._head_end(), *rounds)
        cap = self.init.outcome_cache if self.init is not None else 100_000
        while len(self.finished) > cap:
            self.finished.popitem(last=False)

    def _send_results(self) -> None:
        now = time.monotonic()
        for group, reports in list(self.results.items()):
            target = self.reply_to.get(group)
            if not reports or target is None:
                continue
            unacked = self.results_unacked[group]
            for batch_id in [b for b, sent in unacked.items() if now - sent > RESULT_ACK_TIMEOUT]:
                del unacked[batch_id]  # never journaled there: the shard re-sends the command later
            if len(unacked) >= RESULT_WINDOW:
                continue
            batch_id = uuid.uuid4().hex
            unacked[batch_id] = now
            self.tell(target, RelayResultBatch(batch_id=batch_id, head_end=self._head_end(),
                                               payload=codec.encode_many(reports), count=len(reports)))
            self.results[group] = []

    def _arm_tick(self) -> None:
        """Keep a tick armed for the driver's next deadline; arm an earlier one when a call has
        brought the deadline forward (a late tick stalls pacing, retries and timeouts)."""
        if self.driver is None:
            return
        delay = self.driver.next_tick_in()
        delay = _MAX_TICK if delay is None else min(_MAX_TICK, delay)
        due = time.monotonic() + delay
        if self.tick_armed and self.tick_due <= due + 0.001:
            return
        self.tick_armed, self.tick_due = True, due
        self.wake_after(delay, _TICK)

    # ------------------------------------------------------------ queries and faults

    def receiveMsg_GatewayStatusQuery(self, msg: GatewayStatusQuery, sender: Address) -> None:
        driver = self._ready()
        self.tell(sender, GatewayStatus(
            request_id=msg.request_id, head_end=self._head_end(), pid=os.getpid(),
            breaker=str(driver.core.breaker_phase), pending=driver.core.pending,
            in_flight=driver.core.in_flight, outcomes=tuple(sorted(self.counts.items())),
        ))

    def receiveMsg_CrashActor(self, msg: CrashActor, sender: Address) -> None:
        log.warning("crash injected", extra={"reason": msg.reason})
        os._exit(70)

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        if self.driver is not None:
            self.driver.close()

    def _ready(self) -> LoopDriver:
        if self.driver is None:
            raise RuntimeError("HeadEndGateway got work before its GatewayInit")
        return self.driver

    def _head_end(self) -> str:
        return self.init.head_end if self.init is not None else "unknown"


def dlms_driver(host: str, port: int, options: DlmsGatewayOptions, config: AdapterConfig) -> LoopDriver:
    """The DLMS adapter's driver (imported here only: dlms-cosem is the optional ``dlms`` extra)."""
    from pathlib import Path

    from headend.dlms import DlmsSettings, DlmsSocketDriver, dlms_adapter_config, load_address_book

    book = load_address_book(Path(options.address_book)) if options.address_book else None
    settings = DlmsSettings(host=host, port=port, client_wport=options.client_wport,
                            password=options.password,
                            wport_base=options.wport_base, address_book=book, pool_size=options.pool_size,
                            response_timeout=options.response_timeout)
    return DlmsSocketDriver(settings, dlms_adapter_config(settings, config))



def cim_driver(options: CimGatewayOptions) -> LoopDriver:
    """The CIM adapter's driver (imported here only: lxml is the optional ``cim`` extra). It owns the
    EndDeviceEvents callback listener (docs/cim.md). The gateway uses only core.set_rate_share,
    .breaker_phase, .pending and .in_flight, which `CimCore` provides too (hence the cast)."""
    from headend.cim.core import CimCoreConfig
    from headend.cim.driver import CimHttpDriver, CimSettings

    settings = CimSettings(url=options.url, callback_host=options.callback_host,
                           callback_port=options.callback_port, callback_url=options.callback_url or None,
                           token=options.token,
                           core=CimCoreConfig(max_batch=options.max_batch,
                                              callback_timeout=options.callback_timeout))
    return cast("LoopDriver", CimHttpDriver(settings))
