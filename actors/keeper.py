"""The ClusterKeeper actor: this node's membership and leases in PostgreSQL, and what they mean here.

One per node, a child of the root (cluster mode only). Every `renew_every_s` it

1. heartbeats its member row and renews every lease it holds in ONE statement; a lease that did
   not renew (expired, or taken by another node) is revoked here at once;
2. if the database has not answered for `lease_ttl_s - renew_every_s`, fences itself: revokes
   every group locally before its leases can expire elsewhere (the storage would refuse its writes
   anyway: every shard commit checks its epoch in the same transaction);
3. reads members and leases, asks `domain.placement.plan` what to acquire and what to hand over,
   acquires orphans (an atomic UPDATE: one winner, epoch + 1) and grants them to the local shard
   actors (`GroupGrant`), which recover from the database and answer `GroupServing`;
4. tells the desk the groups it may credit (`GroupsOwned`: only groups serving here) and the
   gateways this node's share of each head-end's rate limit (`RateShare`).

Hand-over (a joining node, a drain, a rolling restart): the desk stops crediting the group, the
shard flushes and closes (`GroupRevoke` → `GroupStopped`), then the lease is released, so the next
owner acquires it at once instead of waiting for it to expire.

Failure detection is the lease, not Thespian's convention (~22 min by default; THESPIAN.md): a
killed node's leases expire `lease_ttl_s` after its last renewal and the survivors take them on
their next tick.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from actors.base import JodoActor
from actors.directory import Directory
from actors.shard import gateway_child_id, shard_child_id
from actors.stores import DSN_ENV
from domain.placement import PlacementView, plan
from protocols.cluster import (
    ClusterStatusQuery,
    ClusterStatusView,
    GroupFenced,
    GroupGrant,
    GroupRevoke,
    GroupServing,
    GroupsOwned,
    GroupStopped,
    KeeperInit,
    RateShare,
    SetDraining,
)
from protocols.control import Address, ChildAddressChanged, SubscribeChildAddresses
from storage.errors import StorageError, StorageUnavailable
from storage.postgres_cluster import ClusterStore, Lease
from supervisors.supervisor import ROOT_NAME

__all__ = ["ClusterKeeper", "group_resource"]

log = logging.getLogger("jodo.keeper")
_TICK = "jodo-keeper-tick"


def group_resource(group: int) -> str:
    return f"group:{group}"


def _group_of(resource: str) -> int:
    return int(resource.removeprefix("group:"))


@dataclass(slots=True)
class _Held:
    lease: Lease
    granted_at: float  # monotonic, when the lease was acquired here
    orphaned_for_s: float  # how long it had been expired when we took it (0: released or new)
    serving: bool = False


class ClusterKeeper(JodoActor):
    def __init__(self) -> None:
        super().__init__()
        self.init: KeeperInit | None = None
        self.store: ClusterStore | None = None
        self.held: dict[str, _Held] = {}
        self.releasing: dict[str, Lease] = {}
        self.draining = False
        self.last_renewed = 0.0  # monotonic time of the last successful renewal
        self.shards = Directory(follow="shards")
        self.gateways = Directory(follow="gateways")
        self.desk = Directory(follow="desk")  # a root child: its address is the "supervisor" here
        self.tick_armed = False
        self.last_view: dict[str, Any] = {}
        self.share = -1.0

    # ------------------------------------------------------------ start

    def receiveMsg_KeeperInit(self, msg: KeeperInit, sender: Address) -> None:
        if self.init is not None:
            return
        dsn = os.environ.get(DSN_ENV, "")
        store = ClusterStore(dsn, connect_timeout_s=min(2.0, msg.lease_ttl_s / 2),
                             statement_timeout_ms=int(max(500.0, msg.lease_ttl_s * 400)))
        store.join(msg.node_id, advertise=msg.advertise, http_url=msg.http_url,
                   roles=("front", "desk", "shards"))
        store.ensure_resources([group_resource(g) for g in range(msg.groups)])
        # a restarted keeper adopts what this node still holds (the shards may be serving it)
        now = time.monotonic()
        for view in store.leases("group:"):
            if view.owner == msg.node_id and view.expires_in_s > 0:
                lease = Lease(resource=view.resource, owner=msg.node_id, epoch=view.epoch,
                              ttl_s=msg.lease_ttl_s)
                self.held[view.resource] = _Held(lease, now, 0.0)
        self.init, self.store, self.last_renewed = msg, store, now
        self.use_data_dir(None)
        self.count_process()
        self.report_started(sender)
        root = self.createActor("supervisors.supervisor.RootSupervisor", globalName=ROOT_NAME)
        self.tell(root, SubscribeChildAddresses(child_ids=("shards", "gateways", "desk")))
        log.info("cluster member joined", extra={"node_id": msg.node_id, "adopted": sorted(self.held)})
        self._tick()
        self._arm_tick()

    def receiveMsg_ChildAddressChanged(self, msg: ChildAddressChanged, sender: Address) -> None:
        for directory in (self.shards, self.gateways):
            learnt = directory.learn(msg)
            if isinstance(learnt, tuple):
                if directory is self.shards:
                    # a (re)started shard is dormant: grant it again what we hold
                    held = self.held.get(group_resource(int(learnt[0].removeprefix("shard-"))))
                    if held is not None:
                        held.serving = False
                        self._grant(held)
                    self._tell_desk()
                else:
                    self.share = -1.0  # a (re)started gateway gets its share again
                    self._tell_gateways()
            elif learnt is not None:
                self.tell(learnt, SubscribeChildAddresses())
        if self.desk.learn(msg) is not None:
            self._tell_desk()

    # ------------------------------------------------------------ the tick

    def receiveMsg_WakeupMessage(self, msg: Any, sender: Address) -> None:
        if msg.payload != _TICK:
            return
        self.tick_armed = False
        try:
            self._tick()
        except Exception as exc:
            self.tick_failed(exc)
        finally:
            self._arm_tick()

    def _tick(self) -> None:
        init, store = self.init, self.store
        if init is None or store is None:
            return
        try:
            self._renew(init, store)
            self._place(init, store)
        except StorageUnavailable as exc:
            self.metric("cluster_store_error")
            log.warning("cluster store unavailable", extra={"node_id": init.node_id, "error": str(exc)})
            if self.held and time.monotonic() - self.last_renewed > init.lease_ttl_s - init.renew_every_s:
                # our leases may expire before we can renew them: stop writing first
                for resource in list(self.held):
                    self._lose(resource, "unreachable")
        for held in self.held.values():
            if not held.serving:
                self._grant(held)
        self._tell_desk()
        self._tell_gateways()
        self.metric("set_cluster_leases_held", len(self.held))

    def _renew(self, init: KeeperInit, store: ClusterStore) -> None:
        load = {"groups": sorted(_group_of(r) for r in self.held), "pid": os.getpid()}
        store.heartbeat(init.node_id, load)
        if self.held:
            kept = store.renew([h.lease for h in self.held.values()], init.lease_ttl_s)
            for resource in [r for r in self.held if r not in kept]:
                self._lose(resource, "expired")
        self.last_renewed = time.monotonic()

    def _place(self, init: KeeperInit, store: ClusterStore) -> None:
        members = store.members()
        me = next((m for m in members if m.node_id == init.node_id), None)
        self.draining = bool(me and me.draining)
        live = tuple(sorted(m.node_id for m in members if m.live(init.suspect_after_s) and not m.draining))
        alive = {m.node_id for m in members if m.live(init.suspect_after_s)}
        leases = store.leases("group:")
        owners = {
            v.resource: (v.owner if v.owner is not None and v.expires_in_s > 0 and v.owner in alive else None)
            for v in leases
        }
        for resource in self.held:  # what we hold is ours whatever the last read said
            owners[resource] = init.node_id
        for resource in self.releasing:
            owners[resource] = None if self.draining else init.node_id
        wanted = plan(PlacementView(me=init.node_id, live=live, owners=owners), max_moves=init.max_moves)
        expired_for = {v.resource: -v.expires_in_s for v in leases if v.owner is not None}
        for resource in wanted.acquire:
            if resource in self.held or resource in self.releasing:
                continue
            lease = store.acquire(resource, init.node_id, init.lease_ttl_s)
            if lease is None:
                continue  # another node won it
            orphaned = max(0.0, expired_for.get(resource, 0.0))
            self.held[resource] = _Held(lease, time.monotonic(), orphaned)
            self.metric("cluster_lease_acquired", "orphan" if orphaned > 0 else "free")
            log.info("lease acquired", extra={"node_id": init.node_id, "resource": resource,
                                              "epoch": lease.epoch, "orphaned_s": round(orphaned, 3)})
            self._grant(self.held[resource])
        for resource in wanted.release:
            self._hand_over(resource)
        self.last_view = {
            "members": [
                {"node_id": m.node_id, "advertise": m.advertise, "http_url": m.http_url,
                 "heartbeat_age_s": round(m.heartbeat_age_s, 3), "live": m.live(init.suspect_after_s),
                 "draining": m.draining, "left": m.left, "incarnation": m.incarnation, "load": m.load}
                for m in members
            ],
            "leases": [
                {"resource": v.resource, "owner": v.owner, "epoch": v.epoch,
                 "expires_in_s": round(v.expires_in_s, 3)}
                for v in leases
            ],
        }
        self.metric("set_cluster_view", members=len(alive), live=len(live),
                    unowned=sum(1 for o in owners.values() if o is None))

    # ------------------------------------------------------------ ownership changes

    def _grant(self, held: _Held) -> None:
        target = self.shards.address(shard_child_id(_group_of(held.lease.resource)))
        if target is not None:
            self.tell(target, GroupGrant(group=_group_of(held.lease.resource), epoch=held.lease.epoch,
                                         owner=held.lease.owner))

    def _lose(self, resource: str, reason: str) -> None:
        held = self.held.pop(resource, None)
        if held is None:
            return
        self.metric("cluster_lease_lost", reason)
        log.warning("lease lost", extra={"resource": resource, "epoch": held.lease.epoch, "reason": reason})
        self._tell_desk()
        self._revoke(held.lease, f"lease {reason}")

    def _hand_over(self, resource: str) -> None:
        held = self.held.pop(resource, None)
        if held is None:
            return
        log.info("handing over", extra={"resource": resource, "epoch": held.lease.epoch})
        self.releasing[resource] = held.lease
        self._tell_desk()  # the desk stops crediting it first
        self._revoke(held.lease, "hand-over")

    def _revoke(self, lease: Lease, reason: str) -> None:
        target = self.shards.address(shard_child_id(_group_of(lease.resource)))
        if target is not None:
            self.tell(target, GroupRevoke(group=_group_of(lease.resource), epoch=lease.epoch, reason=reason))

    def receiveMsg_GroupServing(self, msg: GroupServing, sender: Address) -> None:
        held = self.held.get(group_resource(msg.group))
        if held is None or held.lease.epoch != msg.epoch or held.serving:
            return
        held.serving = True
        took = time.monotonic() - held.granted_at
        if held.orphaned_for_s > 0:
            self.metric("cluster_failover", held.orphaned_for_s + took)
        log.info("group serving", extra={"group": msg.group, "epoch": msg.epoch, "meters": msg.meters,
                                         "recovery_s": round(msg.seconds, 3),
                                         "after_expiry_s": round(held.orphaned_for_s + took, 3)})
        self._tell_desk()

    def receiveMsg_GroupStopped(self, msg: GroupStopped, sender: Address) -> None:
        lease = self.releasing.pop(group_resource(msg.group), None)
        if lease is None or lease.epoch != msg.epoch or self.store is None:
            return
        try:
            self.store.release(lease)
        except StorageError as exc:  # it expires by itself within the TTL
            log.warning("release failed", extra={"resource": lease.resource, "error": str(exc)})
        self.metric("cluster_lease_lost", "released")
        log.info("lease released", extra={"resource": lease.resource, "epoch": lease.epoch})

    def receiveMsg_GroupFenced(self, msg: GroupFenced, sender: Address) -> None:
        held = self.held.get(group_resource(msg.group))
        if held is not None and held.lease.epoch == msg.epoch:
            self.held.pop(group_resource(msg.group))
            self.metric("cluster_lease_lost", "fenced")
            self._tell_desk()

    def receiveMsg_SetDraining(self, msg: SetDraining, sender: Address) -> None:
        init, store = self.init, self.store
        ok = False
        if init is not None and store is not None:
            node = msg.node_id or init.node_id
            try:
                ok = store.set_draining(node, msg.draining)
            except StorageError as exc:
                log.warning("drain failed", extra={"node_id": node, "error": str(exc)})
            log.info("drain set", extra={"node_id": node, "draining": msg.draining, "known": ok})
            self._tick()
        self.tell(sender, ClusterStatusView(request_id=msg.request_id, body=self._status()))

    def receiveMsg_ClusterStatusQuery(self, msg: ClusterStatusQuery, sender: Address) -> None:
        self.tell(sender, ClusterStatusView(request_id=msg.request_id, body=self._status()))

    def receiveMsg_ActorExitRequest(self, msg: Any, sender: Address) -> None:
        if self.store is not None and self.init is not None:
            try:
                self.store.leave(self.init.node_id)  # a clean leave: the others need not wait it out
            except StorageError as exc:
                log.warning("leave failed", extra={"error": str(exc)})
            self.store.close()

    # ------------------------------------------------------------ telling the node

    def _serving_groups(self) -> tuple[int, ...]:
        return tuple(sorted(_group_of(r) for r, h in self.held.items() if h.serving))

    def _tell_desk(self) -> None:
        desk = self.desk.supervisor
        if desk is not None:
            self.tell(desk, GroupsOwned(groups=self._serving_groups()))

    def _tell_gateways(self) -> None:
        init = self.init
        if init is None:
            return
        share = len(self.held) / max(1, init.groups)
        if share == self.share:
            return
        sent = False
        for child_id in init.head_ends:
            target = self.gateways.address(gateway_child_id(child_id))
            if target is not None:
                self.tell(target, RateShare(share=share))
                sent = True
        if sent or not init.head_ends:
            self.share = share

    def _status(self) -> dict[str, object]:
        init = self.init
        return {
            "node_id": init.node_id if init else "",
            "draining": self.draining,
            "held": {r: {"epoch": h.lease.epoch, "serving": h.serving} for r, h in sorted(self.held.items())},
            "releasing": sorted(self.releasing),
            "renewed_ago_s": round(time.monotonic() - self.last_renewed, 3),
            "rate_share": self.share,
            **self.last_view,
        }

    def _arm_tick(self) -> None:
        if not self.tick_armed and self.init is not None:
            self.tick_armed = True
            self.wake_after(self.init.renew_every_s, _TICK)
