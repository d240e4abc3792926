"""Messages of the cluster keeper (one per node) and the actors whose ownership it drives.

The keeper holds the node's leases in PostgreSQL (storage/postgres_cluster.py) and tells its own
node's actors what they own. Nothing here crosses a node: each node's actors talk only to their own
keeper; nodes agree through the database (leases with fencing epochs, the shared ledger).

    keeper ──GroupGrant(group, epoch)──► MeterShard   open the store fenced at epoch, recover, serve
    keeper ◄──GroupServing(group, epoch)── MeterShard
    keeper ──GroupsOwned(groups)────────► PaymentDesk  credit these groups (and find their payments
                                                       in the shared ledger)
    keeper ──GroupRevoke(group, epoch)──► MeterShard   hand-over or lease lost: flush, close, forget
    keeper ◄──GroupStopped(group, epoch)── MeterShard  (then the keeper releases the lease)
    keeper ◄──GroupFenced(group, epoch)─── MeterShard  a write was refused: another node owns it now
    keeper ──RateShare(share)───────────► HeadEndGateway  this node's part of each head-end's limit
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.wire import Carrier

#: how a dormant shard says it does not serve its group (the client and front door look for it)
NOT_SERVED = "not served by this node"

__all__ = [
    "NOT_SERVED",
    "ClusterStatusQuery",
    "ClusterStatusView",
    "GroupFenced",
    "GroupGrant",
    "GroupRevoke",
    "GroupServing",
    "GroupStopped",
    "GroupsOwned",
    "KeeperInit",
    "RateShare",
    "SetDraining",
]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class KeeperInit(Carrier):
    """The ClusterKeeper's first message. The DSN is read from the environment (actors/stores.py)."""

    node_id: str
    advertise: str  # this node's address as peers see it
    http_url: str  # this node's front door, for `jodo cluster status` and forwarding
    groups: int
    shards: int = 256
    lease_ttl_s: float = 3.0
    renew_every_s: float = 1.0
    suspect_after_s: float = 3.0
    head_ends: tuple[str, ...] = ()
    max_moves: int = 1  # hand-overs started per tick (joining nodes take groups gradually)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupGrant(Carrier):
    """Keeper → shard: you own `group` at `epoch` (idempotent: re-sent every tick while owned)."""

    group: int
    epoch: int
    owner: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupServing(Carrier):
    """Shard → keeper: recovered under `epoch` and serving; `seconds` the recovery took."""

    group: int
    epoch: int
    seconds: float
    meters: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupRevoke(Carrier):
    """Keeper → shard: stop serving `group` (hand-over, drain, lease lost)."""

    group: int
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupStopped(Carrier):
    """Shard → keeper: stopped; everything it journaled is durable, nothing more leaves it."""

    group: int
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupFenced(Carrier):
    """Shard → keeper: a write under `epoch` was refused (another node owns the group now);
    the shard has already dropped the group."""

    group: int
    epoch: int
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GroupsOwned(Carrier):
    """Keeper → desk: the shard groups this node serves now (the whole set, not a change)."""

    groups: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RateShare(Carrier):
    """Keeper → gateway: the share (0..1) of each head-end's rate limit this node may use: its
    share of the groups, so the sum over the cluster's nodes is at most the configured limit."""

    share: float


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class SetDraining(Carrier):
    """→ keeper: drain (hand every group over and take none) or stop draining."""

    request_id: str
    draining: bool
    node_id: str = ""  # "" = the keeper's own node; any member can be drained from any node


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ClusterStatusQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ClusterStatusView(Carrier):
    """The keeper's view: `body` is a JSON-able dict (members, leases, this node's groups)."""

    request_id: str
    body: dict[str, object]
