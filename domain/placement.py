"""Which node should hold which shard group: balanced, with as few moves as possible. Pure.

Every node's keeper calls `plan` on every tick with the same view of the members and leases (read
from the database) and acts only on its own part of the answer: acquire what it should take,
hand over what it should give up. Views may differ for a tick; the database's atomic acquire
settles any race, and the next tick converges.

Rules:
- targets: with R resources and L live members, every member should hold floor(R/L) or
  ceil(R/L); the members that get the ceiling are the ones already holding the most (ties by node
  id), so a settled placement stays put;
- orphans (no live owner) are taken by the members below their target, each orphan by the member
  chosen for it by a stable hash of (resource, member) among those still below target, so two
  members do not race for the same orphan first;
- a member above its target hands over at most `max_moves` per call, and only once no orphan is
  waiting (a failover is served before any rebalancing); a member below its target takes the
  freed group on its next tick;
- a member not in `live` (draining, or not live) hands over everything and takes nothing.

Movement is minimal: the groups handed over are exactly the members' surplus over their targets
(nobody at or below its target ever gives one up). With every member planning each tick on the
same view, the placement settles within 1 + 2·ceil(S / max_moves) ticks, S the largest surplus of
one member (one tick takes every orphan; each hand-over takes two: release, then acquire); the
property test in tests/unit/test_placement.py checks both from any start.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PlacementPlan", "PlacementView", "plan", "targets"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementView:
    me: str
    live: tuple[str, ...]  # live, non-draining members (me included unless I am draining)
    owners: Mapping[str, str | None]  # resource -> live owner (None: unowned, expired, or owner gone)

    def __post_init__(self) -> None:
        if not self.me or len(set(self.live)) != len(self.live):
            raise ValueError(f"a placement view needs a node id and distinct live members: {self.live!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPlan:
    acquire: tuple[str, ...]  # to try to acquire now, in this order
    release: tuple[str, ...]  # to hand over now (stop, flush, release)


def _score(resource: str, member: str) -> int:
    return zlib.crc32(f"{resource}|{member}".encode())


def targets(live: tuple[str, ...], owners: Mapping[str, str | None]) -> dict[str, int]:
    """How many resources each live member should hold."""
    if not live:
        return {}
    total = len(owners)
    base, extra = divmod(total, len(live))
    held = {m: 0 for m in live}
    for owner in owners.values():
        if owner in held:
            held[owner] += 1
    # the `extra` members holding the most keep the ceiling (a settled placement does not move)
    ranked = sorted(live, key=lambda m: (-held[m], m))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(ranked)}


def plan(view: PlacementView, *, max_moves: int = 1) -> PlacementPlan:
    """What `view.me` should do now: orphans to try to acquire (the atomic acquire settles a race),
    and at most `max_moves` of its own groups to hand over (stop, flush, release). Deterministic:
    every member planning on the same view agrees on who takes which orphan."""
    if max_moves < 0:
        raise ValueError(f"max_moves must be >= 0, not {max_moves}")
    mine = sorted(r for r, o in view.owners.items() if o == view.me)
    if view.me not in view.live:
        return PlacementPlan(acquire=(), release=tuple(mine))
    want = targets(view.live, view.owners)
    held = {m: 0 for m in view.live}
    for owner in view.owners.values():
        if owner in held:
            held[owner] += 1
    orphans = sorted(r for r, o in view.owners.items() if o is None or o not in held)
    # hand each orphan, in turn, to the member below target that scores highest for it
    acquire: list[str] = []
    room = {m: want[m] - held[m] for m in view.live}
    for resource in orphans:
        takers = [m for m in view.live if room[m] > 0]
        if not takers:
            break
        taker = max(takers, key=lambda m: (_score(resource, m), m))
        room[taker] -= 1
        if taker == view.me:
            acquire.append(resource)
    release: list[str] = []
    surplus = held[view.me] - want[view.me]
    if surplus > 0 and not orphans and any(held[m] < want[m] for m in view.live):
        # give up the resources that score lowest for us: deterministic, and spread over takers
        ranked = sorted(mine, key=lambda r: (_score(r, view.me), r))
        release = ranked[: min(surplus, max_moves)]
    return PlacementPlan(acquire=tuple(acquire), release=tuple(release))
