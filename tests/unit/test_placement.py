"""Balanced placement of shard groups over live members (domain/placement.py)."""

from __future__ import annotations

import pytest
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


def counts(owners: dict[str, str | None], live: tuple[str, ...]) -> dict[str, int]:
    return {m: list(owners.values()).count(m) for m in live}


def test_orphans_go_first_to_the_member_holding_fewest() -> None:
    owners: dict[str, str | None] = dict.fromkeys(GROUPS)
    for g in GROUPS[:5]:
        owners[g] = "a"
    for g in GROUPS[5:8]:
        owners[g] = "b"  # GROUPS[8:] were c's, and c died
    live = ("a", "b")
    got = {m: plan(view(m, live, owners)).acquire for m in live}
    assert (len(got["a"]), len(got["b"])) == (1, 3)  # both end at 6
    assert not set(got["a"]) & set(got["b"])


def test_nobody_at_or_below_its_target_ever_hands_a_group_over() -> None:
    owners: dict[str, str | None] = {g: "a" for g in GROUPS[:6]} | {g: "b" for g in GROUPS[6:10]} | {
        g: "c" for g in GROUPS[10:]}
    live = ("a", "b", "c", "d")  # d joins: targets 3 each; a gives 3, b gives 1, c (2) gives none
    released = dict.fromkeys(live, 0)
    for _ in range(20):
        plans = {m: plan(view(m, live, owners)) for m in live}
        for m, p in plans.items():
            released[m] += len(p.release)
            for r in p.release:
                owners[r] = None
        for m, p in plans.items():
            for r in p.acquire:
                owners[r] = owners[r] or m
    assert released == {"a": 3, "b": 1, "c": 0, "d": 0}
    assert sorted(counts(owners, live).values()) == [3, 3, 3, 3]


def test_hand_overs_are_limited_to_max_moves_per_call() -> None:
    owners: dict[str, str | None] = dict.fromkeys(GROUPS, "a")
    live = ("a", "b")
    assert len(plan(view("a", live, owners), max_moves=1).release) == 1
    assert len(plan(view("a", live, owners), max_moves=4).release) == 4
    assert len(plan(view("a", live, owners), max_moves=100).release) == 6  # never past its target
    assert plan(view("a", live, owners), max_moves=0).release == ()


def test_no_group_is_handed_over_while_an_orphan_waits() -> None:
    owners: dict[str, str | None] = dict.fromkeys(GROUPS, "a")
    owners["group:0"] = None
    p = plan(view("a", ("a", "b"), owners))
    assert p.release == () and p.acquire == ()  # b takes the orphan first
    assert plan(view("b", ("a", "b"), owners)).acquire == ("group:0",)


def test_a_draining_members_groups_are_claimed_while_it_still_holds_them() -> None:
    owners: dict[str, str | None] = {g: ("a", "b", "c")[i % 3] for i, g in enumerate(GROUPS)}
    live = ("b", "c")  # a is draining: its groups are taken as soon as it releases them
    claimed = [r for m in live for r in plan(view(m, live, owners)).acquire]
    assert sorted(claimed) == sorted(g for g, o in owners.items() if o == "a")


def test_a_view_with_a_member_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        view("a", ("a", "a"), {})
    with pytest.raises(ValueError):
        plan(view("a", ("a",), {}), max_moves=-1)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    live=members,
    resources=st.integers(0, 24),
    max_moves=st.integers(1, 4),
)
def test_from_any_placement_the_moves_are_exactly_the_surplus_and_settle_in_bounded_rounds(
    data: st.DataObject, live: tuple[str, ...], resources: int, max_moves: int
) -> None:
    groups = [f"group:{g}" for g in range(resources)]
    anyone = st.sampled_from([None, *"abcdef"])  # owners may be dead, or not yet live
    owners: dict[str, str | None] = {g: data.draw(anyone) for g in groups}
    owners = {g: (o if o in live else None) for g, o in owners.items()}  # the keeper's view
    want = targets(live, owners)
    surplus = {m: max(0, n - want[m]) for m, n in counts(owners, live).items()}
    bound = 1 + 2 * -(-max(surplus.values()) // max_moves) + 1  # + the round that finds nothing to do
    released = 0
    for _ in range(bound):
        plans = {m: plan(view(m, live, dict(owners)), max_moves=max_moves) for m in live}
        changed = 0
        for m, p in plans.items():
            assert len(p.release) <= max_moves
            for r in p.release:
                assert owners[r] == m
                owners[r] = None
                released += 1
                changed += 1
        for m, p in plans.items():
            for r in p.acquire:
                assert owners[r] is None  # one view, so no two members claim the same orphan
                owners[r] = m
                changed += 1
        if changed == 0:
            break
    else:
        raise AssertionError(f"not settled in {bound} rounds: {owners}")
    assert released == sum(surplus.values())  # minimal movement
    assert all(o in live for o in owners.values())
    n = counts(owners, live).values()
    assert max(n) - min(n) <= 1
