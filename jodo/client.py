"""Talking to a running node from outside the actor system: tests, the CLI, the front door, benches.

`NodeClient` finds the desk, shards and gateways through the tree status (addresses change when an
actor restarts, so it looks again when asked to `refresh`) and wraps the request/reply messages.
It holds one Thespian endpoint: use it from one thread.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from actors.facade import ActorRuntime, Address, new_request_id
from domain.commands import MeterCommand
from domain.events import MeterEvent
from domain.sharding import group_of, logical_shard
from domain.state import Meter
from jodo.node import Node, TreeStatus
from protocols import codec
from protocols.cluster import NOT_SERVED, ClusterStatusQuery, ClusterStatusView, SetDraining
from protocols.payments import (
    DeskSaturated,
    PaymentBatch,
    PaymentBatchResult,
    PaymentItemResult,
    PaymentReceived,
)
from protocols.runtime import (
    ClockSet,
    DeskStatus,
    DeskStatusQuery,
    GatewayStatus,
    GatewayStatusQuery,
    MeterCommandBatch,
    MeterCommandBatchResult,
    MeterQuery,
    MeterView,
    PaymentTraceQuery,
    PaymentTraceView,
    ShardLatency,
    ShardLatencyQuery,
    ShardStatus,
    ShardStatusQuery,
)
from protocols.wire import Carrier

__all__ = ["NodeClient", "Saturated"]


@dataclass(frozen=True, slots=True)
class Saturated:
    retry_after_s: int


class NodeClient:
    """Requests to one node's actors, by kind."""

    def __init__(self, node: Node, *, groups: int, shards: int = 256, timeout: float = 30.0) -> None:
        self.node = node
        self.groups = groups
        self.shards = shards
        self.timeout = timeout
        self.desk: Address | None = None
        self.keeper: Address | None = None  # cluster mode only
        self.shard: dict[int, Address] = {}
        self.gateway: dict[str, Address] = {}
        self.refresh()

    @property
    def runtime(self) -> ActorRuntime:
        return self.node.runtime

    def refresh(self, tree: TreeStatus | None = None) -> None:
        """Look the actors' addresses up again (after a restart), in ``tree`` if just fetched."""
        tree = tree if tree is not None else self.node.status()
        self.desk = tree.child("desk").address
        self.keeper = next((c.address for c in tree.root.status.children if c.id == "keeper"), None)
        self.shard = {}
        self.gateway = {}
        for view in tree.supervisors():
            for child in view.status.children:
                if child.address is None:
                    continue
                if child.id.startswith("shard-"):
                    self.shard[int(child.id.removeprefix("shard-"))] = child.address
                elif child.id.startswith("gateway-"):
                    self.gateway[child.id.removeprefix("gateway-")] = child.address

    def group_of(self, account: str) -> int:
        return group_of(logical_shard(account, self.shards), self.groups)

    # ------------------------------------------------------------ payments

    def pay(self, payments: Sequence[PaymentReceived]) -> list[PaymentItemResult] | Saturated:
        """Hand payments to the desk; returns after the ledger commit."""
        assert self.desk is not None
        batch = PaymentBatch(batch_id=uuid.uuid4().hex, payload=codec.encode_many(payments))
        reply = self.runtime.ask(self.desk, batch, Carrier, self.timeout)
        if isinstance(reply, DeskSaturated):
            return Saturated(reply.retry_after_s)
        assert isinstance(reply, PaymentBatchResult)
        return codec.decode_many(reply.payload, expect=PaymentItemResult)

    def pay_nowait(self, payments: Sequence[PaymentReceived]) -> str:
        """Hand payments to the desk without waiting for the ledger; returns the batch id its answer
        carries (collect answers with `payment_answers`). For an open-loop load: many batches in flight."""
        assert self.desk is not None
        batch = PaymentBatch(batch_id=uuid.uuid4().hex, payload=codec.encode_many(payments))
        self.runtime.tell(self.desk, batch)
        return batch.batch_id

    def payment_answers(self, timeout: float) -> list[tuple[str, list[PaymentItemResult] | Saturated]]:
        """The desk's answers to `pay_nowait` batches that arrive within ``timeout`` seconds (waits for
        the first one at most that long, then takes whatever else is already here). Anything else that
        arrives is dropped and counted, as `ActorRuntime.ask` does."""
        out: list[tuple[str, list[PaymentItemResult] | Saturated]] = []
        system = self.runtime._system  # the facade has no listen(); the endpoint is ours alone
        reply = system.listen(max(0.0, timeout))
        while reply is not None:
            if isinstance(reply, DeskSaturated):
                out.append((reply.batch_id, Saturated(reply.retry_after_s)))
            elif isinstance(reply, PaymentBatchResult):
                out.append((reply.batch_id, codec.decode_many(reply.payload, expect=PaymentItemResult)))
            else:
                self.runtime.discarded_replies += 1
            reply = system.listen(0.0)
        return out

    def trace(self, payment_id: str) -> dict[str, object] | None:
        assert self.desk is not None
        q = PaymentTraceQuery(request_id=new_request_id(), payment_id=payment_id)
        return self.runtime.ask(self.desk, q, PaymentTraceView, self.timeout).record

    def desk_status(self) -> DeskStatus:
        assert self.desk is not None
        return self.runtime.ask(self.desk, DeskStatusQuery(request_id=new_request_id()), DeskStatus,
                                self.timeout)

    # ------------------------------------------------------------ meters

    def send(self, commands: Iterable[MeterCommand], *, chunk: int = 10_000) -> list[tuple[int, str]]:
        """Send meter commands to their shards (in order per meter); returns the rejections."""
        rejected, unserved = self.send_split(commands, chunk=chunk)
        return sorted(rejected + [(i, f"shard group {g} is {NOT_SERVED}") for g, ii in unserved.items()
                                  for i in ii])

    def send_split(
        self, commands: Iterable[MeterCommand], *, chunk: int = 10_000
    ) -> tuple[list[tuple[int, str]], dict[int, list[int]]]:
        """`send`, with the commands of groups this node does not serve (cluster) set apart:
        (rejections, group → indexes of its commands, untouched, for the group's owner)."""
        unserved: dict[int, list[int]] = {}
        by_group: dict[int, list[tuple[int, MeterCommand]]] = defaultdict(list)
        for n, c in enumerate(commands):
            by_group[self.group_of(c.account)].append((n, c))
        rejected: list[tuple[int, str]] = []  # (index in ``commands``, reason); -1: a whole chunk
        for group, items in sorted(by_group.items()):
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                payload = codec.encode_many(c for _, c in part)
                batch = MeterCommandBatch(batch_id=uuid.uuid4().hex, payload=payload)
                reply = self.runtime.ask(self.shard[group], batch, MeterCommandBatchResult, self.timeout)
                if reply.accepted == 0 and len(reply.rejected) == 1 and reply.rejected[0][0] == -1 \
                        and NOT_SERVED in reply.rejected[0][1]:
                    unserved.setdefault(group, []).extend(n for n, _ in part)
                    continue
                rejected += [
                    (part[i][0] if 0 <= i < len(part) else -1, reason) for i, reason in reply.rejected
                ]
        return sorted(rejected), unserved

    def meter(self, account: str) -> Meter | None:
        view = self._meter_view(account, 0)
        return None if not view.meter else codec.decode(view.meter, expect=Meter)

    def serves(self, account: str) -> bool:
        """False in a cluster when another node serves the account's group."""
        return self._meter_view(account, 0).served

    def history(self, account: str, limit: int = 50) -> list[MeterEvent]:
        view = self._meter_view(account, limit)
        return codec.decode_many(view.history) if view.history else []

    def _meter_view(self, account: str, history: int) -> MeterView:
        q = MeterQuery(request_id=new_request_id(), account=account, history=history)
        return self.runtime.ask(self.shard[self.group_of(account)], q, MeterView, self.timeout)

    def cluster_status(self) -> dict[str, object] | None:
        """The keeper's view (members, leases, what this node holds), or None on a single node."""
        if self.keeper is None:
            return None
        q = ClusterStatusQuery(request_id=new_request_id())
        return self.runtime.ask(self.keeper, q, ClusterStatusView, self.timeout).body

    def set_draining(self, draining: bool, node_id: str = "") -> dict[str, object] | None:
        """Drain `node_id` (default: this node): it hands every group over and takes none."""
        if self.keeper is None:
            return None
        q = SetDraining(request_id=new_request_id(), draining=draining, node_id=node_id)
        return self.runtime.ask(self.keeper, q, ClusterStatusView, self.timeout).body

    def shard_status(self, group: int) -> ShardStatus:
        return self.runtime.ask(self.shard[group], ShardStatusQuery(request_id=new_request_id()),
                                ShardStatus, self.timeout)

    def gateway_status(self, head_end: str) -> GatewayStatus:
        return self.runtime.ask(self.gateway[head_end], GatewayStatusQuery(request_id=new_request_id()),
                                GatewayStatus, self.timeout)

    def latency(self) -> tuple[list[float], list[float]]:
        """Take every shard's latency samples: (payment → command sent, payment → connected) seconds."""
        to_command: list[float] = []
        to_connected: list[float] = []
        for address in self.shard.values():
            reply = self.runtime.ask(address, ShardLatencyQuery(request_id=new_request_id()), ShardLatency,
                                     self.timeout)
            to_command += reply.to_command
            to_connected += reply.to_connected
        return to_command, to_connected

    def set_clock(self, now: int) -> None:
        """Move every shard's manual clock to ``now`` (each runs what came due before answering), and the
        desk's (its ledger times)."""
        for address in [*self.shard.values(), *([self.desk] if self.desk is not None else [])]:
            self.runtime.ask(address, ClockSet(now=now, request_id=new_request_id()), ClockSet,
                             self.timeout)
