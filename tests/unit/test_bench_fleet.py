"""bench/bench_fleet.py's generator: the fleet it writes is the fleet registration makes, and a node
recovers it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from actors.shard_service import ShardService
from bench.bench_fleet import FleetSpec, account, generate, is_billed, start_node
from domain.policy import load_policy
from domain.state import Meter
from jodo.client import NodeClient
from storage.api import StoreOptions
from storage.sqlite import open_shard_store

POLICY = load_policy()
NOW = 1_795_000_000
METERS = 3_000
GROUPS = 2


def recovered(data: Path, spec: FleetSpec) -> dict[str, Meter]:
    """Every meter, as a shard group's service recovers it from ``data`` (as `MeterShard` does)."""
    out: dict[str, Meter] = {}
    for group in range(spec.groups):
        store = open_shard_store(data, group, StoreOptions(synchronous="normal"))
        try:
            service = ShardService(group=group, groups=spec.groups, shards=spec.shards, store=store,
                                   policy=POLICY)
            service.recover(NOW)
            assert all(store.latest_snapshot(s) is not None for s in service.heads)
            out.update((m.account, m) for m in service.host.meters())
        finally:
            store.close()
    return out


def test_billed_fraction_is_spread_over_the_fleet() -> None:
    billed = [i for i in range(1_000) if is_billed(i, 0.25)]
    assert len(billed) == 250
    assert max(b - a for a, b in itertools.pairwise(billed)) == 4


def test_cloned_fleet_equals_the_fleet_registered_through_the_shard_service(tmp_path: Path) -> None:
    clone = FleetSpec(meters=METERS, groups=GROUPS, now=NOW, billed_fraction=0.3, via="clone")
    register = FleetSpec(meters=METERS, groups=GROUPS, now=NOW, billed_fraction=0.3, via="register")
    stats = generate(tmp_path / "clone", clone, workers=2)
    generate(tmp_path / "register", register, workers=1)

    assert sum(int(s["meters"]) for s in stats) == METERS
    assert sum(int(s["journaled_meters"]) for s in stats) <= 256  # one seed per logical shard
    cloned, registered = recovered(tmp_path / "clone", clone), recovered(tmp_path / "register", register)
    assert len(registered) == METERS
    assert cloned == registered
    billed = [m for m in cloned.values() if m.bill is not None]
    assert len(billed) == 900
    assert all(m.recent_payment_ids for m in billed)


def test_cloned_prepaid_fleet_equals_the_one_registered_and_read_through_the_shard_service(
    tmp_path: Path,
) -> None:
    days = ("2026-11-01", "2026-11-02", "2026-11-03")
    clone = FleetSpec(meters=METERS, groups=GROUPS, now=NOW, via="clone", prepaid_days=days)
    register = FleetSpec(meters=METERS, groups=GROUPS, now=NOW, via="register", prepaid_days=days)
    generate(tmp_path / "clone", clone, workers=2)
    generate(tmp_path / "register", register, workers=1)
    cloned, registered = recovered(tmp_path / "clone", clone), recovered(tmp_path / "register", register)
    assert len(registered) == METERS and cloned == registered
    m = cloned[account(7)]
    assert m.prepaid is not None and [d.read_id for d in m.prepaid.days] == [f"MPW00000007:{d}" for d in days]
    assert m.prepaid.mode_request_id == "pp-7" and 0 < -m.dues_paise < 500_000


@pytest.mark.system
def test_a_node_started_on_the_generated_data_dir_recovers_every_meter(tmp_path: Path) -> None:
    spec = FleetSpec(meters=2_000, groups=GROUPS, now=NOW, billed_fraction=0.5)
    stats = generate(tmp_path / "data", spec, workers=2)
    node = start_node(tmp_path / "data", GROUPS, tmp_path / "node.log", ready_timeout=60.0)
    try:
        client = NodeClient(node, groups=GROUPS, timeout=30.0)
        assert {g: client.shard_status(g).meters for g in range(GROUPS)} == {
            int(s["group"]): int(s["meters"]) for s in stats
        }
        seen = client.meter(account(1))
        assert seen is not None and seen.bill is not None and seen.recent_payment_ids == ("pay-1",)
    finally:
        node.shutdown()
