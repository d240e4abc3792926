"""The MeterShard actor: a thin Thespian shell around `ShardService`.

It hosts the meter entities of one shard group. Handlers decode, call the service (decide → journal
→ assign), then deliver what the service hands back: acknowledgements to the desk, relay commands to
the gateways (a credit window of unacknowledged batches per gateway), notices and work orders to the
sender. One ``wakeupAfter`` tick drives the timers, re-sends, snapshots and gauges.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.base import JodoActor
from actors.clock import ActorClock
from actors.directory import Directory
from actors.notices import FileNoticeSender
from actors.sendpatch import send_to_self_without_wakeup
from actors.shard_serials import SerialAnswers, ShardSerialsSlice
from actors.shard_service import Outgoing, RelayEffect, ShardService
from actors.stores import open_desk, open_shard
from domain.commands import ClearPayment, MeterCommand
from domain.effects import AckPayment, CancelRelayCommand, SendRelayCommand
from domain.enums import WorkOrderAction
from domain.policy import load_policy
from protocols import codec
from protocols.cluster import NOT_SERVED, GroupFenced, GroupGrant, GroupRevoke, GroupServing, GroupStopped
from protocols.control import Address, ChildAddressChanged
from protocols.payments import CreditAckBatch, CreditBatch
from protocols.relay import RelayBatchReceived, RelayCommandBatch, RelayResultBatch
from protocols.runtime import (
    ClockSet,
    CrashActor,
    MeterCommandBatch,
    MeterCommandBatchResult,
    MeterQuery,
    MeterSerialsFound,
    MeterSerialsQuery,
    MeterView,
    RelayResultsApplied,
    ShardFlush,
    ShardInit,
    ShardLatency,
    ShardLatencyQuery,
    ShardStatus,
    ShardStatusQuery,
)
from storage.api import DeskStore, StoreOptions
from storage.errors import Fenced, StorageError
from storage.postgres_schema import Fence
from supervisors.supervisor import ROOT_NAME

__all__ = ["MeterShard", "gateway_child_id", "shard_child_id"]

send_to_self_without_wakeup(ShardFlush)  # its group-commit note, told from handlers only
send_to_self_without_wakeup(ShardSerialsSlice)  # its serial-question note, told from handlers only

log = logging.getLogger("jodo.shard")
_TICK = "jodo-shard-tick"
# unacknowledged RelayCommandBatches per gateway (THESPIAN.md: credit windows). Small on purpose: Thespian's
# TCP transport sends one message per target at a time, so batches beyond the first wait in its queue
# unmerged; kept here instead, they leave as one batch when the window opens.
RELAY_WINDOW = 2
RELAY_BATCH = 5_000
SNAPSHOT_BUDGET_S = 0.05  # seconds of snapshotting per tick at most (then the next tick goes on)
REFREEZE_GROWTH = 50_000  # meters added since the last gc.freeze() that call for another
#: gauges (and the re-freeze check) at most this often on a wall clock, not every tick: under the
#: webhook load `len(host)` and the gauges were ~7 % of a shard's samples at 4 ticks a second
GAUGE_EVERY_S = 1.0
FLUSH_AT = 20_000  # staged events + effects that make a shard journal at once, mailbox or not
#: A paid meter still off this long after its connect went out counts as "paid but disconnected".
PAID_GRACE_S = 60


def shard_child_id(group: int) -> str:
    return f"shard-{group}"


def gateway_child_id(head_end: str) -> str:
    return f"gateway-{head_end}"


class _LedgerReceipts:
    """Payment id → when the front door received it, read from the desk's ledger (recovery only)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ledger: DeskStore | None = None

    def __call__(self, payment_id: str) -> float | None:
        try:
            if self.ledger is None:
                self.ledger = open_desk(self.data_dir)
            record = self.ledger.payment(payment_id)
        except Exception:  # the ledger is optional here: only a latency sample is lost
            return None
        return None if record is None else float(record.received_at)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


@dataclass(frozen=True, slots=True)
class _CreditReply:
    desk: Address
    batch_id: str
    payment_ids: frozenset[str]


class MeterShard(JodoActor):
    def __init__(self) -> None:
        super().__init__()
        self.service: ShardService | None = None
        self.init: ShardInit | None = None
        self.clock = ActorClock(False, 0)
        self.gateways = Directory(follow="gateways")
        self.relay_queue: dict[str, deque[RelayEffect]] = defaultdict(deque)
        self.relay_unacked: dict[str, set[str]] = defaultdict(set)
        self.notices: FileNoticeSender | None = None
        self.tick_armed = False
        self.frozen_at = 0
        self.gauged_at = 0.0  # time.monotonic() of the last gauges
        self.flush_requested = False
        self.replies: list[_CreditReply | MeterCommandBatchResult] = []
        self.reply_to: list[Address] = []
        self.results_taken: list[tuple[Address, str]] = []  # (gateway, result batch id) to acknowledge
        self.epoch = 0  # cluster mode: the lease epoch the group is served under (0: dormant)
        self.keeper: Address | None = None  # cluster mode: who granted it (told when fenced)
        self.serial_answers = SerialAnswers()  # the gateway's serial questions, answered in slices

    # ------------------------------------------------------------ start

    def receiveMsg_ShardInit(self, msg: ShardInit, sender: Address) -> None:
        if self.init is not None:
            return
        self.clock = ActorClock(msg.manual_clock, msg.start_at)
        self.notices = FileNoticeSender(Path(msg.data_dir) / "outbox", msg.group)
        # cluster mode: dormant until this node's keeper holds the group's lease (GroupGrant)
        service = None if msg.cluster_node else self._open(msg, None)
        self.init, self.service = msg, service
        self.use_data_dir(msg.data_dir)
        self.count_process()
        self.report_started(sender)
        if service is not None:
            self._deliver_notices(service.open_notices())
        self._follow_gateways()
        self._arm_tick()

    def _open(self, msg: ShardInit, fence: Fence | None) -> ShardService:
        """Open the group's store (fenced in cluster mode) and recover its meters from it."""
        policy = load_policy(msg.policy_text or None)
        data = Path(msg.data_dir)
        options = StoreOptions(synchronous="normal" if msg.synchronous == "normal" else "full")
        store = open_shard(data, msg.group, options, fence)
        service = ShardService(
            group=msg.group, groups=msg.groups, shards=msg.shards, store=store, policy=policy,
            snapshot_every=msg.snapshot_every,
        )
        receipts = _LedgerReceipts(data)
        try:
            service.recover(self.clock.now(), receipt_of=receipts)
        except BaseException:
            store.close()
            raise
        finally:
            receipts.close()
        self.service = service
        self._freeze_heap()
        self.metric("recovered", "MeterShard", service.recovery_seconds)
        log.info(
            "shard group recovered",
            extra={"group": msg.group, "meters": len(service.host), "seconds": service.recovery_seconds,
                   "epoch": fence.epoch if fence else 0},
        )
        return service

    # ------------------------------------------------------------ cluster ownership

    def receiveMsg_GroupGrant(self, msg: GroupGrant, sender: Address) -> None:
        init = self.init
        if init is None or not init.cluster_node or msg.group != init.group:
            return
        if self.service is not None and self.epoch == msg.epoch:
            self.tell(sender, GroupServing(group=msg.group, epoch=msg.epoch,
                                           seconds=self.service.recovery_seconds,
                                           meters=len(self.service.host)))
            return
        if self.service is not None:
            self._drop(f"granted again at epoch {msg.epoch} while serving epoch {self.epoch}")
        fence = Fence(resource=f"group:{msg.group}", owner=msg.owner, epoch=msg.epoch)
        service = self._open(init, fence)
        self.epoch, self.keeper = msg.epoch, sender
        self._deliver_notices(service.open_notices())
        for child_id in list(self.gateways.peers):
            self._resend_to_gateway(child_id.removeprefix("gateway-"))
        self.tell(sender, GroupServing(group=msg.group, epoch=msg.epoch, seconds=service.recovery_seconds,
                                       meters=len(service.host)))

    def receiveMsg_GroupRevoke(self, msg: GroupRevoke, sender: Address) -> None:
        if self.service is not None and self.epoch == msg.epoch:
            try:
                self._flush()  # what is staged is journaled and answered before the hand-over
            except StorageError as exc:  # fenced (dropped already) or the database is away:
                log.warning("hand-over flush failed", extra={"group": msg.group, "error": str(exc)})
                # what was staged is not journaled: its senders get no answer and send it again
            if self.service is not None:
                self._drop(msg.reason)
        self.tell(sender, GroupStopped(group=msg.group, epoch=msg.epoch))

    def _drop(self, reason: str) -> None:
        """Stop serving: close the store and forget every meter and everything owed to anyone.

        Whatever was owed is durable (journal, ledger) and the group's next owner re-sends it."""
        service = self.service
        if service is None:
            return
        log.warning("shard group dropped",
                    extra={"group": service.group, "epoch": self.epoch, "reason": reason})
        self.service = None
        self.epoch = 0
        self.relay_queue.clear()
        self.relay_unacked.clear()
        self.replies, self.reply_to, self.flush_requested = [], [], False
        for gateway, batch_id in self.results_taken:  # free the gateway's window: results go unapplied
            self.tell(gateway, RelayResultsApplied(batch_id=batch_id, group=service.group))
        self.results_taken = []
        service.store.close()
        gc.collect()

    def _fenced(self, exc: Fenced) -> None:
        service = self.service
        epoch = self.epoch
        self.metric("fencing_refusal", "group")
        log.error("write refused by fencing: another node owns the group",
                  extra={"group": service.group if service else -1, "epoch": epoch, "detail": str(exc)})
        self._drop("fenced")
        if self.init is not None:
            keeper = self.keeper
            if keeper is not None:
                self.tell(keeper, GroupFenced(group=self.init.group, epoch=epoch, detail=str(exc)))

    def _follow_gateways(self) -> None:
        root = self.createActor("supervisors.supervisor.RootSupervisor", globalName=ROOT_NAME)
        self.tell(root, self.gateways.subscribe_message())

    def receiveMsg_ChildAddressChanged(self, msg: ChildAddressChanged, sender: Address) -> None:
        learnt = self.gateways.learn(msg)
        if learnt is None:
            return
        if isinstance(learnt, tuple):  # (dormant in a cluster: nothing to re-send until granted)
            # a gateway (re)started: whatever it had from us may be gone; send every pending command
            self._resend_to_gateway(learnt[0].removeprefix("gateway-"))
        else:
            from protocols.control import SubscribeChildAddresses

            self.tell(learnt, SubscribeChildAddresses())

    def _resend_to_gateway(self, head_end: str) -> None:
        if self.service is None:
            return
        self.relay_unacked[head_end].clear()
        again = [c for c in self.service.in_flight() if c.head_end == head_end]
        queued = {c.command_id for c in self.relay_queue[head_end]}
        self.relay_queue[head_end].extend(c for c in again if c.command_id not in queued)
        self._flush_relay(head_end)

    # ------------------------------------------------------------ batches

    def receiveMsg_CreditBatch(self, msg: CreditBatch, sender: Address) -> None:
        service = self.service
        if service is None:
            return  # dormant (cluster): the desk learns from its keeper and credits the owner
        try:
            payments = codec.decode_many(msg.payload, expect=ClearPayment, trusted=True)
        except codec.CodecError as exc:
            self.undecodable(msg, exc)
            return
        service.note_payments(zip((p.payment_id for p in payments), msg.received_wall, strict=False))
        service.stage(payments, self.clock.now())
        # acknowledged after the group commit; one whose command failed to decide is not acknowledged
        # at all, so the desk sends it again
        self.replies.append(_CreditReply(sender, msg.batch_id, frozenset(p.payment_id for p in payments)))
        self._request_flush()

    def receiveMsg_MeterCommandBatch(self, msg: MeterCommandBatch, sender: Address) -> None:
        service = self.service
        if service is None:
            group = self.init.group if self.init else -1
            self.tell(sender, MeterCommandBatchResult(
                batch_id=msg.batch_id, group=group, accepted=0,
                rejected=((-1, f"shard group {group} is {NOT_SERVED} (owned by another node, or moving): "
                                "retry"),)))
            return
        try:
            items = codec.decode_each(msg.payload)
        except codec.CodecError as exc:
            self.tell(sender, MeterCommandBatchResult(batch_id=msg.batch_id, group=service.group,
                                                      accepted=0, rejected=((-1, str(exc)),)))
            return
        # a record that does not decode is refused on its own; the rest of the batch applies
        rejected = [(i, str(c)) for i, c in enumerate(items) if isinstance(c, codec.CodecError)]
        positions = [i for i, c in enumerate(items) if not isinstance(c, codec.CodecError)]
        commands: list[MeterCommand] = [items[i] for i in positions]  # type: ignore[misc]
        refused = service.stage(commands, self.clock.now())
        rejected += [(positions[i] if 0 <= i < len(positions) else i, why) for i, why in refused]
        self.replies.append(MeterCommandBatchResult(
            batch_id=msg.batch_id, group=service.group,
            accepted=len(items) - len(rejected), rejected=tuple(sorted(rejected)),
        ))
        self.reply_to.append(sender)
        self._request_flush()

    def receiveMsg_MeterSerialsQuery(self, msg: MeterSerialsQuery, sender: Address) -> None:
        """A gateway routing consumption reads: which of these serials are ours (actors/gateway.py).
        Answered from the serial index in slices (actors/shard_serials.py)."""
        if self.service is None:
            group = self.init.group if self.init else -1
            self.tell(sender, MeterSerialsFound(request_id=msg.request_id, group=group, serving=False))
            return
        self.serial_answers.ask(msg, sender)
        self._serial_slice()

    def receiveMsg_ShardSerialsSlice(self, msg: ShardSerialsSlice, sender: Address) -> None:
        self.serial_answers.noted = False
        self._serial_slice()

    def _serial_slice(self) -> None:
        answers = self.serial_answers
        group = self.init.group if self.init else -1
        service = self.service
        out = (answers.unserved(group) if service is None
               else answers.run(service.host, group))
        for to, reply in out:
            self.tell(to, reply)
        if len(answers) and not answers.noted:
            answers.noted = True
            self.tell(self.address, ShardSerialsSlice())

    def receiveMsg_RelayResultBatch(self, msg: RelayResultBatch, sender: Address) -> None:
        service = self.service
        if service is None:
            # dormant: free the gateway's window; the group's owner re-sends the command and the
            # head-end answers it again (it deduplicates by command id)
            group = self.init.group if self.init else -1
            self.tell(sender, RelayResultsApplied(batch_id=msg.batch_id, group=group))
            return
        # acknowledged after the commit that journals them (frees the gateway's result window)
        self.results_taken.append((sender, msg.batch_id))
        try:
            results: list[MeterCommand] = codec.decode_many(msg.payload, trusted=True)
        except codec.CodecError as exc:
            self.undecodable(msg, exc)
            self._request_flush()
            return
        service.stage(results, self.clock.now())
        self._request_flush()

    def receiveMsg_ShardFlush(self, msg: ShardFlush, sender: Address) -> None:
        self.flush_requested = False
        if self.service is not None:
            self._flush()

    def _request_flush(self) -> None:
        """Group commit: journal once every message already in the mailbox has been staged.

        A message to ourselves queues behind them; a large stage is flushed at once.
        """
        service = self._ready()
        if service.staged >= FLUSH_AT:
            self._flush()
        elif not self.flush_requested:
            self.flush_requested = True
            self.tell(self.address, ShardFlush())

    def _flush(self) -> None:
        """Journal what is staged, then (only then) answer and send."""
        service = self._ready()
        try:
            out = service.flush(self.clock.now())
        except Fenced as exc:
            self._fenced(exc)  # nothing of it was journaled: nothing is answered or sent
            return
        acks: dict[str, AckPayment] = {a.payment_id: a for a in out.acks}
        credited_at = self.clock.now()
        replies, reply_to = self.replies, self.reply_to
        self.replies, self.reply_to = [], []
        taken, self.results_taken = self.results_taken, []
        for gateway, batch_id in taken:
            self.tell(gateway, RelayResultsApplied(batch_id=batch_id, group=service.group))
        targets = iter(reply_to)
        for reply in replies:
            if isinstance(reply, _CreditReply):
                mine = [acks[p] for p in reply.payment_ids if p in acks]
                if len(mine) < len(reply.payment_ids):
                    log.warning("payments not acknowledged", extra={
                        "batch_id": reply.batch_id, "count": len(reply.payment_ids) - len(mine)})
                ack = CreditAckBatch(batch_id=reply.batch_id, group=service.group,
                                     payload=codec.encode_many(mine), credited_at=credited_at)
                self.tell(reply.desk, ack)
            else:
                self.tell(next(targets), reply)
        self._deliver(out)

    def receiveMsg_RelayBatchReceived(self, msg: RelayBatchReceived, sender: Address) -> None:
        self.relay_unacked[msg.head_end].discard(msg.batch_id)
        self._flush_relay(msg.head_end)

    def receiveMsg_ClockSet(self, msg: ClockSet, sender: Address) -> None:
        self.clock.set(msg.now)
        self._on_tick()
        if msg.request_id:
            self.tell(sender, msg)

    def receiveMsg_WakeupMessage(self, msg: Any, sender: Address) -> None:
        if msg.payload != _TICK:
            return
        self.tick_armed = False
        try:
            self._on_tick()
        except Exception as exc:
            self.tick_failed(exc)
        finally:
            self._arm_tick()

    def _on_tick(self) -> None:
        service = self.service
        init = self.init
        if service is None or init is None:
            return
        try:
            self._sweep(service, init)
        except Fenced as exc:
            self._fenced(exc)

    def _sweep(self, service: ShardService, init: ShardInit) -> None:
        now = self.clock.now()
        while True:
            out = service.tick(now, limit=init.max_batch, resend_after=init.resend_after_s)
            self._flush()
            if self.service is not service:
                return  # fenced while flushing
            self._deliver(out)
            nxt = service.host.next_due()
            if nxt is None or nxt > now or not self.clock.manual:
                break  # wall clock: the next tick takes the rest, so a sweep never blocks the mailbox
        # snapshots within a time budget per tick, so a sweep never holds the mailbox for long
        service.snapshot_some(now, SNAPSHOT_BUDGET_S)
        at = time.monotonic()
        if at - self.gauged_at >= GAUGE_EVERY_S or self.clock.manual:
            self.gauged_at = at
            if len(service.host) - self.frozen_at >= REFREEZE_GROWTH:
                self._freeze_heap()
            self._gauges()

    def _freeze_heap(self) -> None:
        """Move every live object out of the cyclic GC's reach (`gc.freeze`).

        A shard holds hundreds of thousands of long-lived meter records and nothing it holds forms
        cycles; without this, each full collection rescans all of them. Done after recovery and
        whenever the host has grown by `REFREEZE_GROWTH` meters since.
        """
        service = self.service
        if service is not None:
            gc.freeze()
            self.frozen_at = len(service.host)

    def _arm_tick(self) -> None:
        if not self.tick_armed and self.init is not None:
            self.tick_armed = True
            self.wake_after(self.init.tick_seconds, _TICK)

    # ------------------------------------------------------------ queries and faults

    def receiveMsg_MeterQuery(self, msg: MeterQuery, sender: Address) -> None:
        service = self.service
        if service is None:
            self.tell(sender, MeterView(request_id=msg.request_id, account=msg.account, meter=b"",
                                        served=False))
            return
        m = service.host.get(msg.account)
        history = b""
        if msg.history:
            from domain.sharding import logical_shard

            rows = service.store.events_for_account(
                logical_shard(msg.account, service.host.shards), msg.account, limit=msg.history
            )
            from domain.fused import expand

            # newest first; a fused payment record reads as the events it stands for (domain/fused.py)
            history = codec.encode_many(e for r in rows for e in reversed(expand(codec.decode(r.body))))
        self.tell(sender, MeterView(request_id=msg.request_id, account=msg.account,
                                    meter=b"" if m is None else codec.encode(m), history=history))

    def receiveMsg_ShardStatusQuery(self, msg: ShardStatusQuery, sender: Address) -> None:
        service = self.service
        if service is None:
            self.tell(sender, ShardStatus(
                request_id=msg.request_id, group=self.init.group if self.init else -1, pid=os.getpid(),
                meters=0, relay_counts=(), paid_but_disconnected=0, pending_commands=0,
                now=self.clock.now(), recovery_seconds=0.0, journal_heads=0, serving=False))
            return
        host = service.host
        self.tell(
            sender,
            ShardStatus(
                request_id=msg.request_id, group=service.group, pid=os.getpid(), meters=len(host),
                relay_counts=tuple((str(k), v) for k, v in host.relay_counts.items() if v),
                paid_but_disconnected=host.paid_but_disconnected,
                pending_commands=host.relay_counts.get("connecting", 0)  # type: ignore[call-overload]
                + host.relay_counts.get("disconnecting", 0),  # type: ignore[call-overload]
                now=self.clock.now(), recovery_seconds=service.recovery_seconds,
                journal_heads=sum(service.heads.values()),
                queued_commands=sum(len(q) for q in self.relay_queue.values()),
                epoch=self.epoch,
            ),
        )

    def receiveMsg_ShardLatencyQuery(self, msg: ShardLatencyQuery, sender: Address) -> None:
        service = self.service
        if service is None:
            self.tell(sender, ShardLatency(request_id=msg.request_id, to_command=(), to_connected=()))
            return
        to_command, to_connected = tuple(service.to_command), tuple(service.to_connected)
        service.to_command.clear()
        service.to_connected.clear()
        self.tell(sender, ShardLatency(request_id=msg.request_id, to_command=to_command,
                                       to_connected=to_connected))

    def receiveMsg_CrashActor(self, msg: CrashActor, sender: Address) -> None:
        log.warning("crash injected", extra={"reason": msg.reason})
        os._exit(70)

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        if self.service is not None:
            self.service.store.close()

    # ------------------------------------------------------------ delivery

    def _ready(self) -> ShardService:
        if self.service is None:
            raise RuntimeError("MeterShard got work before its ShardInit")
        return self.service

    def _deliver(self, out: Outgoing) -> None:
        for head_end, commands in out.relay.items():
            queue = self.relay_queue[head_end]
            queue.extend(commands)
            withdrawn = {c.command_id for c in commands if isinstance(c, CancelRelayCommand)}
            if withdrawn:
                # a command cancelled before it left this shard (a payment arriving while its
                # disconnect waits for the gateway's window) is never sent, and neither is its cancel
                unsent = {c.command_id for c in queue if isinstance(c, SendRelayCommand)} & withdrawn
                if unsent:
                    self.relay_queue[head_end] = deque(c for c in queue if c.command_id not in unsent)
            self._flush_relay(head_end)
        if out.notices and self.notices is not None:
            self._deliver_notices(out.notices)
        if out.work_orders and self.notices is not None:
            self.notices.work_orders(out.work_orders)
        reconnected: defaultdict[str, list[float]] = defaultdict(list)
        for head_end, seconds in out.reconnected:
            reconnected[head_end].append(seconds)
        for head_end, all_seconds in reconnected.items():  # one call per head-end and batch
            self.metric("payment_reconnected", head_end, *all_seconds)
        for (action, outcome), count in Counter(out.finished).items():  # one increment per label set
            self.metric("relay_command_finished", action, outcome, count)
        for (name, label), count in out.prepaid.items():  # domain.prepaid_rules.tally
            if name == "prepaid_reads":
                self.metric("prepaid_reads", label, count)
            elif name == "emergency_credit":
                self.metric("emergency_credit", label, count)
            else:
                self.metric("prepaid_disconnection_held", count)
        for rule, account, payment_id, why in out.off_rule:  # credited in full: flagged for the utility
            log.warning("prepaid recharge off the recharge rule (credited in full)",
                        extra={"payment_id": payment_id, "account": account, "rule": rule, "detail": why})
            self.metric("prepaid_recharge_off_rule", rule)

    def _deliver_notices(self, notices: list[Any]) -> None:
        if not notices or self.notices is None or self.service is None:
            return
        self.service.notices_sent(self.notices.send(notices))
        for template, count in Counter(str(n.template) for n in notices).items():
            self.metric("notice_sent", template, count)

    def _flush_relay(self, head_end: str) -> None:
        service = self.service
        target = self.gateways.address(gateway_child_id(head_end))
        queue = self.relay_queue[head_end]
        if service is None or target is None:
            return
        unacked = self.relay_unacked[head_end]
        while queue and len(unacked) < RELAY_WINDOW:
            batch = [queue.popleft() for _ in range(min(RELAY_BATCH, len(queue)))]
            batch_id = uuid.uuid4().hex
            self.tell(target, RelayCommandBatch(batch_id=batch_id, group=service.group, head_end=head_end,
                                                payload=codec.encode_many(batch), count=len(batch),
                                                now=self.clock.now()))
            unacked.add(batch_id)
            service.mark_sent(batch)

    def _gauges(self) -> None:
        service = self.service
        if service is None:
            return
        host = service.host
        self.metric("set_meters_by_relay_state", {str(k): v for k, v in host.relay_counts.items()})
        auto, field = host.paid_but_disconnected_since(self.clock.now(), PAID_GRACE_S)
        self.metric("set_paid_but_disconnected", auto=auto, field=field)
        for action in WorkOrderAction:  # every action, 0 when none is open: no "No data" panel
            self.metric("set_work_orders_open", str(action), host.work_orders.get(action, 0))
        self.metric("batches_in_flight", "shard_to_gateway", sum(map(len, self.relay_unacked.values())))
        self.metric("set_prepaid_bands", dict(host.prepaid_bands))
        self.sample_memory()


