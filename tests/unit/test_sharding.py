"""Accounts map to logical shards and groups the same way in every process."""

from __future__ import annotations

import subprocess
import sys

from domain.sharding import group_of, logical_shard, shards_of_group


def test_logical_shard_is_the_same_in_another_process() -> None:
    accounts = [f"N{n:010d}" for n in range(0, 5000, 97)]
    here = [logical_shard(a) for a in accounts]
    code = (
        "from domain.sharding import logical_shard;"
        f"print([logical_shard(a) for a in {accounts!r}])"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert there.stdout.strip() == str(here)


def test_accounts_spread_evenly_over_256_shards() -> None:
    counts = [0] * 256
    for n in range(256_000):
        counts[logical_shard(f"N{n:010d}")] += 1
    assert min(counts) > 800 and max(counts) < 1200


def test_every_shard_belongs_to_exactly_one_group() -> None:
    groups = 3
    seen = sorted(s for g in range(groups) for s in shards_of_group(g, groups))
    assert seen == list(range(256))
    assert all(group_of(s, groups) == g for g in range(groups) for s in shards_of_group(g, groups))
