"""Where the other actors are: learnt from supervisors, followed across restarts.

A restarted actor has a new address (THESPIAN.md, failure semantics), so nobody keeps an address
from start-up. An actor that needs the children of some supervisor (a shard needs the gateways, the
desk needs the shards) asks the root, the one top-level named actor, for that supervisor's address,
subscribes to it, and from then on receives `ChildAddressChanged` after every (re)start — also
when the supervisor itself was restarted, since the root reports its new address too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.control import Address, ChildAddressChanged, SubscribeChildAddresses
from supervisors.supervisor import ROOT_NAME

__all__ = ["ROOT_SUPERVISOR_ID", "Directory"]

ROOT_SUPERVISOR_ID = ROOT_NAME  # the root supervisor's id in its address reports


@dataclass(slots=True)
class Directory:
    """The children of one supervisor (``follow``), by child id, with their restart generation."""

    follow: str
    peers: dict[str, tuple[int, Address]] = field(default_factory=dict)
    supervisor: Address | None = None

    def subscribe_message(self) -> SubscribeChildAddresses:
        """What to tell the root first (only the supervisor we follow)."""
        return SubscribeChildAddresses(child_ids=(self.follow,))

    def learn(self, msg: ChildAddressChanged) -> tuple[str, Address] | Address | None:
        """Take an address report. Returns the supervisor's address when we must subscribe to it
        (tell it `SubscribeChildAddresses()`), a (child id, address) when a peer is new or moved, or
        None when nothing changed."""
        if msg.supervisor_id == ROOT_SUPERVISOR_ID:
            if msg.child_id != self.follow:
                return None
            self.supervisor = msg.address
            return msg.address
        if msg.supervisor_id != self.follow:
            return None
        known = self.peers.get(msg.child_id)
        if known is not None and known[0] > msg.generation:
            return None  # a late report about an earlier incarnation
        if known is not None and known[0] == msg.generation and known[1] == msg.address:
            return None
        self.peers[msg.child_id] = (msg.generation, msg.address)
        return msg.child_id, msg.address

    def address(self, child_id: str) -> Address | None:
        known = self.peers.get(child_id)
        return None if known is None else known[1]
