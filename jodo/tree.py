"""The supervision tree of a jodo node, as data (DESIGN §5).

::

    jodo-root (rest_for_one)
    ├── gateways (one_for_one)   gateway-<head_end>  HeadEndGateway, one per head-end
    ├── shards   (one_for_one)   shard-<group>       MeterShard, one per shard group
    ├── desk                     PaymentDesk
    └── keeper                   ClusterKeeper   (cluster mode only: leases → what this node serves)

rest_for_one at the root: the desk depends on the shards and the shards on the gateways, so if a
whole kind's supervisor gives up, what depends on it restarts after it (and re-learns addresses).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.supervision import ChildSpec, ChildType, Strategy, SupervisorFlags
from protocols.cim import CimGatewayOptions
from protocols.cluster import KeeperInit
from protocols.control import SupervisorInit
from protocols.dlms import DlmsGatewayOptions
from protocols.runtime import DeskInit, GatewayInit, ShardInit

__all__ = ["HeadEnd", "TreeOptions", "jodo_tree", "root_flags"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadEnd:
    name: str
    host: str
    port: int
    rate_limit: float | None = None
    command_timeout: float = 60.0
    max_attempts: int = 2
    dlms: DlmsGatewayOptions | None = None
    cim: CimGatewayOptions | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeOptions:
    data_dir: str
    head_ends: tuple[HeadEnd, ...]
    groups: int = 2
    shards: int = 256
    policy_text: str = ""
    manual_clock: bool = False
    start_at: int = 0
    synchronous: str = "full"
    tick_seconds: float = 0.25
    resend_after_s: int = 30
    snapshot_every: int = 2_000
    # unacknowledged CreditBatches per shard group: 2 keeps one being journaled and one ready; more
    # would only queue small batches in Thespian's one-at-a-time transport instead of merging them
    desk_window: int = 2
    desk_max_queued: int = 200_000
    # supervisors: OTP's default intensity is 1 in 5 s; a shard recovering 3.6 lakh meters needs room
    intensity: int = 5
    period: float = 30.0
    gateway_class: str = "actors.gateway.HeadEndGateway"  # actors.fakes.FakeGateway in actor tests
    # cluster mode: the keeper's init (shards start dormant, the desk credits what the keeper says)
    keeper: KeeperInit | None = None
    guard: str = ""  # the disconnect guard's policy JSON for every gateway ("" = off: actor tests, benches)


def root_flags() -> SupervisorFlags:
    return SupervisorFlags(strategy=Strategy.REST_FOR_ONE, intensity=3, period=60.0,
                           backoff_base=0.1, backoff_cap=5.0)


def jodo_tree(o: TreeOptions) -> tuple[ChildSpec, ...]:
    """The root supervisor's children for these options."""
    kind = SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, intensity=o.intensity, period=o.period,
                           backoff_base=0.05, backoff_cap=5.0)
    gateways = tuple(
        ChildSpec(
            id=f"gateway-{h.name}",
            start=o.gateway_class,
            init=GatewayInit(head_end=h.name, host=h.host, port=h.port, rate_limit=h.rate_limit,
                             command_timeout=h.command_timeout, max_attempts=h.max_attempts,
                             data_dir=o.data_dir, guard=o.guard,
                             dlms=h.dlms, cim=h.cim),
        )
        for h in o.head_ends
    )
    shards = tuple(
        ChildSpec(
            id=f"shard-{g}",
            start="actors.shard.MeterShard",
            shutdown=15.0,
            init=ShardInit(
                group=g, groups=o.groups, data_dir=o.data_dir, shards=o.shards, policy_text=o.policy_text,
                manual_clock=o.manual_clock, start_at=o.start_at, tick_seconds=o.tick_seconds,
                resend_after_s=o.resend_after_s, synchronous=o.synchronous, snapshot_every=o.snapshot_every,
                cluster_node=o.keeper.node_id if o.keeper else "",
            ),
        )
        for g in range(o.groups)
    )
    keeper = () if o.keeper is None else (
        ChildSpec(id="keeper", start="actors.keeper.ClusterKeeper", init=o.keeper, shutdown=10.0),
    )
    return (
        ChildSpec(
            id="gateways", start="supervisors.supervisor.Supervisor", type=ChildType.SUPERVISOR,
            init=SupervisorInit(supervisor_id="gateways", flags=kind, children=gateways), shutdown=30.0,
        ),
        ChildSpec(
            id="shards", start="supervisors.supervisor.Supervisor", type=ChildType.SUPERVISOR,
            init=SupervisorInit(supervisor_id="shards", flags=kind, children=shards), shutdown=60.0,
        ),
        ChildSpec(
            id="desk",
            start="actors.desk.PaymentDesk",
            init=DeskInit(data_dir=o.data_dir, groups=o.groups, shards=o.shards, window=o.desk_window,
                          max_queued=o.desk_max_queued, synchronous=o.synchronous,
                          manual_clock=o.manual_clock, start_at=o.start_at,
                          cluster_node=o.keeper.node_id if o.keeper else ""),
        ),
        *keeper,
    )
