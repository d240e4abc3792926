"""Balanced placement of shard groups over live members (domain/placement.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.placement import PlacementView, plan, targets

GROUPS = [f"group:{g}" for g in range(12)]


def view(me: str, live: tuple[str, ...], owners: dict[str, str | None]) -> PlacementView:
    return PlacementView(me=me, live=live, owners=owners)


def run_round(live: tuple[str, ...], owners: dict[str, str | None], members: tuple[str, ...]) -> int:
    """Every member plans on the same view, then acts: releases first, then acquires (first wins).
    Returns how many leases changed hands."""
    plans = {m: plan(view(m, live, dict(owners))) for m in members}
    moves = 0
    for m, p in plans.items():
        for r in p.release:
            assert owners[r] == m
            owners[r] = None
            moves += 1
    for m, p in plans.items():
        for r in p.acquire:
            if owners[r] is None or owners[r] not in live:
                owners[r] = m
                moves += 1
    return moves


def settle(live: tuple[str, ...], owners: dict[str, str | None], members: tuple[str, ...]) -> int:
    for rounds in range(1, 50):
        if run_round(live, owners, members) == 0:
            return rounds
    raise AssertionError(f"did not converge: {owners}")


def test_an_empty_cluster_spreads_the_groups_evenly_at_once() -> None:
    owners: dict[str, str | None] = dict.fromkeys(GROUPS)
    live = ("a", "b", "c")
    assert run_round(live, owners, live) == 12
    counts = sorted(list(owners.values()).count(m) for m in live)
    assert counts == [4, 4, 4]


def test_orphans_of_a_dead_member_go_to_the_least_loaded() -> None:
    owners: dict[str, str | None] = {g: ("a", "b", "c")[i % 3] for i, g in enumerate(GROUPS)}
    dead = [g for g, o in owners.items() if o == "c"]
    for g in dead:
        owners[g] = None  # its leases expired
    live = ("a", "b")
    kept = {g: o for g, o in owners.items() if o is not None}
    run_round(live, owners, live)
    assert {g: owners[g] for g in kept} == kept  # nobody else moved
    assert sorted(list(owners.values()).count(m) for m in live) == [6, 6]


def test_a_joining_member_takes_groups_only_from_those_above_the_ceiling() -> None:
    owners: dict[str, str | None] = {g: ("a", "b")[i % 2] for i, g in enumerate(GROUPS)}
    live = ("a", "b", "c")
    p = plan(view("c", live, owners))
    assert p.acquire == () and p.release == ()  # nothing free yet: it waits for hand-overs
    for m in ("a", "b"):
        assert len(plan(view(m, live, owners), max_moves=1).release) == 1  # gradually
    settle(live, owners, live)
    assert sorted(list(owners.values()).count(m) for m in live) == [4, 4, 4]


def test_a_settled_placement_does_not_move() -> None:
    owners: dict[str, str | None] = {g: ("a", "b", "c")[i % 3] for i, g in enumerate(GROUPS[:11])}
    live = ("a", "b", "c")
    assert run_round(live, owners, live) == 0


def test_a_draining_member_hands_everything_over_and_takes_nothing() -> None:
    owners: dict[str, str | None] = {g: ("a", "b", "c")[i % 3] for i, g in enumerate(GROUPS)}
    owners["group:0"] = None
    p = plan(view("a", ("b", "c"), owners))
    assert p.acquire == ()
    assert set(p.release) == {g for g, o in owners.items() if o == "a"}


def test_two_members_below_target_choose_different_orphans_first() -> None:
    owners: dict[str, str | None] = dict.fromkeys(GROUPS[:2])
    live = ("a", "b")
    first = {m: plan(view(m, live, owners)).acquire for m in live}
    assert len(first["a"]) == len(first["b"]) == 1 and first["a"] != first["b"]


def test_targets_differ_by_at_most_one() -> None:
    want = targets(("a", "b", "c", "d", "e"), dict.fromkeys(GROUPS))
    assert sum(want.values()) == 12 and max(want.values()) - min(want.values()) <= 1


members = st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6, unique=True).map(tuple)


@settings(max_examples=200, deadline=None)
@given(before=members, after=members, resources=st.integers(1, 24))
def test_any_membership_change_converges_to_one_owner_each_and_counts_within_one(
    before: tuple[str, ...], after: tuple[str, ...], resources: int
) -> None:
    groups = [f"group:{g}" for g in range(resources)]
    owners: dict[str, str | None] = dict.fromkeys(groups)
    settle(before, owners, before)
    # members that left lose their groups (leases expire); new ones join
    for g, o in owners.items():
        if o not in after:
            owners[g] = None
    rounds = settle(after, owners, after)
    assert rounds <= 2 * resources + 3  # a hand-over takes two ticks: release, then acquire
    assert all(o in after for o in owners.values())
    counts = [list(owners.values()).count(m) for m in after]
    assert max(counts) - min(counts) <= 1
