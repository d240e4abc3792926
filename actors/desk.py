"""The PaymentDesk actor: a thin Thespian shell around `DeskService`.

Owns the payments ledger. A `PaymentBatch` is answered (`PaymentBatchResult`) only after the ledger
commit; accepted payments leave for their shard groups in `CreditBatch`es within a credit window.
Shard addresses come from the shards' supervisor and are followed across restarts; a restarted shard
is sent again everything it had not acknowledged.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from actors.base import JodoActor
from actors.clock import ActorClock
from actors.desk_service import DeskService
from actors.directory import Directory
from actors.sendpatch import send_to_self_without_wakeup
from actors.shard import shard_child_id
from actors.stores import open_desk
from domain.effects import AckPayment
from protocols import codec
from protocols.cluster import GroupsOwned
from protocols.control import Address, ChildAddressChanged, SubscribeChildAddresses
from protocols.payments import (
    CreditAckBatch,
    DeskSaturated,
    PaymentBatch,
    PaymentBatchResult,
    PaymentReceived,
)
from protocols.runtime import (
    ClockSet,
    CrashActor,
    DeskFlush,
    DeskInit,
    DeskStatus,
    DeskStatusQuery,
    PaymentTraceQuery,
    PaymentTraceView,
)
from storage.api import StoreOptions
from supervisors.supervisor import ROOT_NAME

__all__ = ["PaymentDesk"]

send_to_self_without_wakeup(DeskFlush)  # its group-commit note, told from handlers only

log = logging.getLogger("jodo.desk")
_TICK = "jodo-desk-tick"
TICK_SECONDS = 0.1  # also how long settled acknowledgements wait to be marked in the ledger
FLUSH_AT = 20_000  # staged payments + acks that make the desk commit at once, mailbox or not


class PaymentDesk(JodoActor):
    def __init__(self) -> None:
        super().__init__()
        self.service: DeskService | None = None
        self.init: DeskInit | None = None
        self.clock = ActorClock(False, 0)
        self.shards = Directory(follow="shards")
        self.tick_armed = False
        self.flush_requested = False
        # (sender, batch id, items, wall time it arrived): staged for the next group commit
        self.intake: list[tuple[Address, str, list[PaymentReceived | codec.CodecError], float]] = []

    def receiveMsg_DeskInit(self, msg: DeskInit, sender: Address) -> None:
        if self.service is not None:
            return
        store = open_desk(
            Path(msg.data_dir), StoreOptions(synchronous="normal" if msg.synchronous == "normal" else "full")
        )
        service = DeskService(store=store, groups=msg.groups, shards=msg.shards, window=msg.window,
                              max_batch=msg.max_batch, max_queued=msg.max_queued,
                              cluster=bool(msg.cluster_node))
        recovered = service.recover()
        self.init, self.service = msg, service
        self.use_data_dir(msg.data_dir)
        self.count_process()
        self.clock = ActorClock(msg.manual_clock, msg.start_at)
        log.info("payment desk recovered", extra={"unacknowledged": recovered})
        self.report_started(sender)
        root = self.createActor("supervisors.supervisor.RootSupervisor", globalName=ROOT_NAME)
        self.tell(root, self.shards.subscribe_message())
        self._arm_tick()

    def receiveMsg_ChildAddressChanged(self, msg: ChildAddressChanged, sender: Address) -> None:
        learnt = self.shards.learn(msg)
        if learnt is None or self.service is None:
            return
        if isinstance(learnt, tuple):
            group = int(learnt[0].removeprefix("shard-"))
            self.service.shard_restarted(group)
            self._flush_credits(group)
        else:
            self.tell(learnt, SubscribeChildAddresses())

    def receiveMsg_GroupsOwned(self, msg: GroupsOwned, sender: Address) -> None:
        service = self._ready()
        before = service.owned
        for group in service.set_owned(frozenset(msg.groups)):
            self._flush_credits(group)
        if before != service.owned:
            log.info("desk credits groups", extra={"groups": sorted(service.owned or ())})

    def receiveMsg_PaymentBatch(self, msg: PaymentBatch, sender: Address) -> None:
        self._ready()
        arrived = time.time()
        try:
            items = codec.decode_each(msg.payload, expect=PaymentReceived)
        except codec.CodecError as exc:
            items = [exc]
        # answered after the group commit: nothing is acknowledged before it is durable
        self.intake.append((sender, msg.batch_id, items, arrived))
        self._request_flush()

    def receiveMsg_CreditAckBatch(self, msg: CreditAckBatch, sender: Address) -> None:
        service = self._ready()
        try:
            acks = codec.decode_many(msg.payload, expect=AckPayment, trusted=True)
        except codec.CodecError as exc:
            self.undecodable(msg, exc)
            return
        # the window frees at once; the ledger's marks are written on the tick (see DeskService.settle)
        service.settle([(msg.group, msg.batch_id, acks)], at=self.clock.now())
        for gateway in service.suspended:
            self.metric("payment_received", gateway, "suspense")
        service.suspended = []
        if len(service.acks_to_record) >= FLUSH_AT:
            service.record_acks(self.clock.now())
        self._flush_credits(msg.group)

    def receiveMsg_DeskFlush(self, msg: DeskFlush, sender: Address) -> None:
        self.flush_requested = False
        self._flush()

    def _request_flush(self) -> None:
        """Group commit: one ledger transaction for every batch already in the mailbox (a message
        to ourselves queues behind them)."""
        staged = sum(len(items) for _, _, items, _ in self.intake)
        if staged >= FLUSH_AT:
            self._flush()
        elif not self.flush_requested:
            self.flush_requested = True
            self.tell(self.address, DeskFlush())

    def _flush(self) -> None:
        service = self._ready()
        now = self.clock.now()
        intake = self.intake
        groups: set[int] = set()
        if intake:
            started = time.perf_counter()
            intakes = service.receive_many([items for _, _, items, _ in intake], now,
                                           received_wall=[arrived for *_, arrived in intake])
            self.metric("journal_commit", "PaymentDesk", time.perf_counter() - started)
            self.intake = []
            for (sender, batch_id, items, _), result in zip(intake, intakes, strict=True):
                if result.saturated:
                    self.metric("desk_saturated")
                    self.tell(sender, DeskSaturated(batch_id=batch_id, retry_after_s=1))
                    continue
                self.tell(sender, PaymentBatchResult(batch_id=batch_id,
                                                     payload=codec.encode_many(result.results)))
                outcomes: Counter[tuple[str, str]] = Counter()
                for r in result.results:
                    item = items[r.index] if 0 <= r.index < len(items) else None
                    gateway = item.gateway if isinstance(item, PaymentReceived) else "unknown"
                    outcomes[gateway, str(r.code)] += 1
                for (gateway, code), count in outcomes.items():  # one increment per label set
                    self.metric("payment_received", gateway, code, count)
                groups |= {service.group_of(p.account) for p in result.accepted}
        for group in groups:
            self._flush_credits(group)

    def receiveMsg_DeskStatusQuery(self, msg: DeskStatusQuery, sender: Address) -> None:
        service = self._ready()
        counts = service.store.payment_counts()
        self.tell(
            sender,
            DeskStatus(
                request_id=msg.request_id, pid=os.getpid(), queued=service.queued,
                in_flight_batches=tuple((g, len(f)) for g, f in service.in_flight.items()),
                counts=(("pending", counts.pending), ("applied", counts.applied),
                        ("suspense", counts.suspense), ("duplicates", counts.duplicates)),
                saturated=service.queued >= service.max_queued,
            ),
        )

    def receiveMsg_PaymentTraceQuery(self, msg: PaymentTraceQuery, sender: Address) -> None:
        service = self._ready()
        record = service.store.payment(msg.payment_id)
        view: dict[str, object] | None = None
        if record is not None:
            view = {
                name: (str(getattr(record, name)) if name == "status" else getattr(record, name))
                for name in (
                    "payment_id", "gateway", "event_id", "account", "original_account", "amount_paise",
                    "channel", "paid_at", "received_at", "committed_at", "status", "applied_at",
                    "suspended_at", "resolved_at", "resolved_by",
                )
            }
        self.tell(sender, PaymentTraceView(request_id=msg.request_id, payment_id=msg.payment_id, record=view))

    def receiveMsg_ClockSet(self, msg: ClockSet, sender: Address) -> None:
        # manual clock (demo, tests): ledger times (committed, applied) follow the shards' clock
        self.clock.set(msg.now)
        if msg.request_id:
            self.tell(sender, msg)

    def receiveMsg_CrashActor(self, msg: CrashActor, sender: Address) -> None:
        log.warning("crash injected", extra={"reason": msg.reason})
        os._exit(70)

    def receiveMsg_WakeupMessage(self, msg: Any, sender: Address) -> None:
        if msg.payload != _TICK:
            return
        self.tick_armed = False
        try:
            service = self.service
            if service is not None and self.init is not None:
                service.record_acks(self.clock.now())
                for group in service.poll():  # cluster: payments for our groups taken by other nodes
                    self._flush_credits(group)
                for group in service.stale(self.init.resend_after_s):
                    log.warning("credit batch unanswered, re-sending", extra={"group": group})
                    self._flush_credits(group)
                self.metric("set_payments_unapplied", service.unacknowledged)
                self.metric("batches_in_flight", "desk_to_shard",
                             sum(len(f) for f in service.in_flight.values()))
                self.sample_memory()
        except Exception as exc:
            self.tick_failed(exc)
        finally:
            self._arm_tick()

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        if self.service is not None:
            self.service.store.close()

    # ------------------------------------------------------------ internals

    def _ready(self) -> DeskService:
        if self.service is None:
            raise RuntimeError("PaymentDesk got work before its DeskInit")
        return self.service

    def _flush_credits(self, group: int) -> None:
        service = self.service
        target = self.shards.address(shard_child_id(group))
        if service is None or target is None:
            return
        for batch in service.batches(group):
            self.tell(target, batch)

    def _arm_tick(self) -> None:
        if not self.tick_armed:
            self.tick_armed = True
            self.wake_after(TICK_SECONDS, _TICK)

