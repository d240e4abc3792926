"""Where a meter lives: account → logical shard → shard group (a MeterShard actor process).

The logical-shard count is fixed for the life of a deployment (default 256); groups are a grouping of
logical shards onto processes, so a logical shard can move between processes or nodes without
rehashing any account. Never Python's ``hash()``: it is salted per process.
"""

from __future__ import annotations

import zlib

__all__ = ["DEFAULT_LOGICAL_SHARDS", "group_of", "logical_shard", "shards_of_group", "stable_hash"]

DEFAULT_LOGICAL_SHARDS = 256


def stable_hash(account: str) -> int:
    """A hash of the account that every process and every release computes alike (CRC-32)."""
    return zlib.crc32(account.encode("utf-8"))


def logical_shard(account: str, shards: int = DEFAULT_LOGICAL_SHARDS) -> int:
    """The logical shard of an account."""
    return stable_hash(account) % shards


def group_of(shard: int, groups: int) -> int:
    """The group (shard process) hosting a logical shard: round-robin, so groups stay even."""
    return shard % groups


def shards_of_group(group: int, groups: int, shards: int = DEFAULT_LOGICAL_SHARDS) -> tuple[int, ...]:
    """Every logical shard a group hosts."""
    return tuple(range(group, shards, groups))
