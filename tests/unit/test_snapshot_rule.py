"""When a shard group snapshots: the tail's estimated replay against a budget (shard_snapshot.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import shard_snapshot
from actors.shard_service import ShardService
from actors.shard_snapshot import SnapshotRule, plan
from domain.commands import ClearPayment, RegisterMeter
from domain.enums import RelayState
from domain.policy import load_policy
from domain.shard import ShardImage
from storage.api import StoreOptions
from storage.sqlite import open_shard_store
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 3, 2, 11)
RULE = SnapshotRule(budget_s=1.0, low_water=0.5, every=10_000)


def test_nothing_is_due_while_the_tail_replays_within_the_budget() -> None:
    assert plan({1: 400, 2: 500}, {1: 10, 2: 10}, seconds_per_event=1e-3, rule=RULE) == []


def test_over_the_budget_the_shards_with_most_tail_per_meter_go_first_down_to_the_low_water() -> None:
    tails = {1: 400, 2: 300, 3: 300, 4: 100}  # 1.1 s of replay at 1 ms an event
    sizes = {1: 4_000, 2: 10, 3: 20, 4: 1}
    due = plan(tails, sizes, seconds_per_event=1e-3, rule=RULE)
    assert due == [4, 2, 3]  # 100/1, 300/10, 300/20 per meter; then 0.4 s left, under 0.5 s
    assert sum(tails[s] for s in due) * 1e-3 >= 1.1 - 0.5


def test_a_run_started_over_the_budget_goes_on_down_to_the_low_water() -> None:
    tails = {1: 300, 2: 300}  # 0.6 s: under the budget, over its low water
    assert plan(tails, {1: 1, 2: 2}, seconds_per_event=1e-3, rule=RULE) == []
    assert plan(tails, {1: 1, 2: 2}, seconds_per_event=1e-3, rule=RULE, catching_up=True) == [1]


def test_shards_to_rewrite_and_long_shard_tails_come_first_whatever_the_budget() -> None:
    tails = {1: 20_000, 2: 10_000, 3: 5, 7: 0}
    due = plan(tails, {}, seconds_per_event=1e-9, rule=RULE, rewrite={7})
    assert due == [7, 1, 2]


def test_a_bad_rule_is_refused() -> None:
    with pytest.raises(ValueError):
        SnapshotRule(budget_s=0)
    with pytest.raises(ValueError):
        SnapshotRule(low_water=1.5)


# ------------------------------------------------------------------ the service

def service(data: Path, budget_s: float) -> ShardService:
    store = open_shard_store(data, 0, StoreOptions(synchronous="normal"))
    # snapshot_every out of reach: only the budget decides
    s = ShardService(group=0, groups=1, shards=256, store=store, policy=POLICY, snapshot_every=10**9,
                     recovery_budget_s=budget_s)
    s.recover(T0)
    s.replay_s_per_event = 1e-3  # a fixed cost per event: the budget counts in events here
    return s


def register(s: ShardService, n: int) -> None:
    s.apply([
        RegisterMeter(account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022,
                      relay_capable=True, control_mode=2, relay=RelayState.DISCONNECTED,
                      opening_dues_paise=150_000)
        for i in range(n)
    ], T0)


def pay(s: ShardService, lo: int, hi: int) -> None:
    s.apply([ClearPayment(account=f"N{i:010d}", payment_id=f"P{i}", amount_paise=150_000, channel="upi",
                          cashless=True, paid_at=T0) for i in range(lo, hi)], T0 + 5)


def test_a_long_tail_is_snapshotted_until_a_restart_would_replay_within_the_budget(tmp_path: Path) -> None:
    s = service(tmp_path, budget_s=0.2)  # 200 events at 1 ms each
    register(s, 400)
    pay(s, 0, 100)
    assert s.tail_events > 200
    while s.snapshot_some(T0 + 6, budget_s=10.0):
        pass
    assert s.tail_events <= 100  # the low water: half the budget
    assert not s.snapshot_due()
    kept = s.tail_events
    s.store.close()

    again = service(tmp_path, budget_s=0.2)
    assert again.tail_events == kept  # what the restart replayed is still a tail
    assert len(again.host) == 400 and len(again.host.pending) == 100
    again.store.close()


def test_a_tail_replayed_at_recovery_counts_towards_the_next_snapshots(tmp_path: Path) -> None:
    s = service(tmp_path, budget_s=100.0)  # never due while it runs
    register(s, 300)
    pay(s, 0, 300)
    assert not s.snapshot_due()
    tail = s.tail_events
    s.store.close()

    again = service(tmp_path, budget_s=0.2)  # a restart under a tighter budget
    assert again.tail_events == tail  # counted while replaying, not forgotten
    due = again.snapshot_due()
    assert due
    again.snapshot(due, T0 + 10)
    assert again.tail_events <= 100
    again.store.close()
    third = service(tmp_path, budget_s=0.2)
    assert third.tail_events == again.tail_events and len(third.host.pending) == 300
    third.store.close()


def test_a_recovery_with_a_long_tail_measures_the_replay_cost(tmp_path: Path) -> None:
    s = service(tmp_path, budget_s=100.0)
    register(s, 2_500)  # 2 500 events: enough to measure
    s.store.close()
    store = open_shard_store(tmp_path, 0, StoreOptions(synchronous="normal"))
    again = ShardService(group=0, groups=1, shards=256, store=store, policy=POLICY)
    assert again.replay_s_per_event == shard_snapshot_default()
    again.recover(T0)
    assert again.replay_s_per_event != shard_snapshot_default()
    assert again.replay_s_per_event == pytest.approx(again.recovery_cpu["tail"] / 2_500)
    store.close()


def shard_snapshot_default() -> float:
    from actors.shard_service import REPLAY_S_PER_EVENT

    return REPLAY_S_PER_EVENT


def test_the_default_budget_leaves_room_in_one_second() -> None:
    assert 0 < shard_snapshot.RECOVERY_BUDGET_S < 1.0


def test_shards_loaded_from_v2_snapshots_are_saved_again_compact(tmp_path: Path) -> None:
    import msgpack

    from domain.packed import PackedTable
    from storage.records import Snapshot

    s = service(tmp_path, budget_s=100.0)
    register(s, 60)
    rules = shard_snapshot.rules_fingerprint(POLICY)
    v2 = []
    for shard in sorted(s.heads):  # what 3981ff4 wrote: the meters as two arrays
        image = s.host.image(shard)
        _, _, values = msgpack.unpackb(shard_snapshot.dump(image, rules))
        del values["base"]
        values["accounts"], values["meters"] = list(image.meters), list(image.meters.values())
        body = msgpack.packb(["jodo.shard-image", 2, values], use_bin_type=True)
        v2.append(Snapshot(shard=shard, upto_seq=s.heads[shard], at=T0, body=body))
    s.store.save_snapshots(v2)
    s.store.close()

    again = service(tmp_path, budget_s=100.0)
    assert again.tail_events == 0 and len(again.host) == 60
    assert sorted(again.snapshot_due()) == sorted(s.heads)
    again.snapshot_some(T0 + 1, budget_s=10.0)
    assert not again.snapshot_due()
    for shard in s.heads:
        saved = again.store.latest_snapshot(shard)
        assert saved is not None
        loaded = shard_snapshot.load(saved.body, shard, rules)
        assert isinstance(loaded, ShardImage) and isinstance(loaded.meters, PackedTable)
    again.store.close()


def test_commands_in_flight_take_their_share_of_the_budget_down_to_the_floor(tmp_path: Path) -> None:
    s = service(tmp_path, budget_s=1.0)
    register(s, 300)
    assert s.tail_rule().budget_s == 1.0  # nothing in flight: the tail has it all
    pay(s, 0, 100)  # 100 connects in flight
    s.follow_s_per_command = 5e-3
    assert s.tail_rule().budget_s == pytest.approx(0.5)
    pay(s, 100, 300)
    assert s.tail_rule().budget_s == shard_snapshot.TAIL_FLOOR_S  # 1.5 s of follow: the floor
    s.replay_s_per_event = 1e-3
    assert s.snapshot_due()  # 1 500 events: over the floor, not over the whole budget
    s.store.close()


def test_a_recovery_with_many_commands_in_flight_measures_their_cost(tmp_path: Path) -> None:
    s = service(tmp_path, budget_s=100.0)
    register(s, 2_100)
    pay(s, 0, 2_100)
    s.store.close()
    again = service(tmp_path, budget_s=100.0)
    assert len(again.host.pending) == 2_100
    assert again.follow_s_per_command == pytest.approx(again.recovery_cpu["follow"] / 2_100)
    again.store.close()
