"""A logical shard's snapshot body: what `ShardService.snapshot` saves and `ShardService.recover` loads.

Storage keeps the body as opaque bytes. Three formats:

* **v3** (written now): v2 with the meters as the shard's compact table (`domain.packed.PackedTable`)
  instead of ``accounts`` and ``meters``: ``base`` = [records, hashes, offsets], three byte strings
  loaded as they are (no object per meter, ~72 B a meter resident). A table with meters that do not
  fit a base (not bytes) is written with ``accounts`` and ``meters`` as in v2.
* **v2**, msgpack ``["jodo.shard-image", 2, {field: value}]``, the `ShardImage` of the
  shard: ``accounts`` and ``meters`` (two arrays in step: each account and its packed meter, the
  shard group's resident bytes as they are), ``versions`` (schema version of every record in those
  bytes, tag → version), ``rules`` (what the counts and timers were computed under:
  `rules_fingerprint`), ``relay`` and ``work_orders`` (counts), ``paid_off`` (account → issue time of
  its command, or OFF_FIELD / OFF_UNSENT), ``pending`` (accounts) and ``timers`` (two arrays in
  step: accounts, next check). Loading it unpacks no meter: one msgpack unpack and a dict built from
  two arrays give the host its table. Arrays rather than a map because msgpack interns map keys:
  a million accounts in the interpreter's intern table cost ~40 B a meter for as long as they live.
  Fields are found by name; a field this code does not know is ignored, so one can be added
  without a new version.
* **v1** (data directories written before): `codec.encode_many` of the shard's `Meter`s.

A v2 body written under other rules (another policy, or `domain.shard.SCHEDULE_RULES` bumped) or a
v1 body loads as meters, which the host counts and schedules afresh.

When to snapshot (`plan`): recovery replays every logical shard's journal tail (~20 µs of CPU per
event), so the group's tail, not any one shard's, sets how long a restart takes. Past a budget of
estimated replay seconds, the shards whose snapshot saves the most replay per meter written go first,
until the rest would replay within half the budget (snapshots come in runs, not one per commit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from domain.enums import RelayState, WorkOrderAction
from domain.packed import PackedTable
from domain.policy import Policy
from domain.shard import SCHEDULE_RULES, ShardImage
from domain.state import Meter
from protocols import codec
from protocols.registry import METER_FLAT

__all__ = [
    "RECOVERY_BUDGET_S", "TAG", "TAIL_FLOOR_S", "VERSION", "SnapshotRule", "dump", "load", "plan",
    "rules_fingerprint",
]

TAG = "jodo.shard-image"
VERSION = 3
_PREFIX = msgpack.packb([TAG, VERSION, None])[:-2]  # fixarray(3) + the tag: no v1 body starts so


def rules_fingerprint(policy: Policy) -> str:
    """What a snapshot's counts and timers depend on besides the meters: the rules and the policy."""
    digest = hashlib.sha256(repr(policy).encode()).hexdigest()[:16]
    return f"{SCHEDULE_RULES}:{digest}"


def dump(image: ShardImage, rules: str) -> bytes:
    """The v2 body of a logical shard's image (its meters packed by `protocols.registry.METER_PACKING`)."""
    meters = image.meters
    base = meters.base() if isinstance(meters, PackedTable) else None
    table: dict[str, Any] = (
        {"base": list(base)} if base is not None
        else {"accounts": list(meters), "meters": list(meters.values())}
    )
    fields: dict[str, Any] = {
        "versions": METER_FLAT.versions,
        "rules": rules,
        **table,
        "relay": {str(k): v for k, v in image.relay_counts.items()},
        "work_orders": {str(k): v for k, v in image.work_orders.items()},
        "paid_off": image.paid_off,
        "pending": sorted(image.pending),
        "timers": [list(image.timers), list(image.timers.values())],
        "prepaid_bands": image.prepaid_bands,  # (absent from bodies before issue 16: no prepaid meters)
    }
    return msgpack.packb([TAG, VERSION, fields], use_bin_type=True)  # type: ignore[no-any-return]


def load(body: bytes, shard: int, rules: str) -> ShardImage | list[Meter]:
    """A snapshot body: the image (v2 or v3 under these rules), else the meters to restore and recount.

    Raises `CodecError` for a body this code cannot read (malformed, or from a newer schema)."""
    if not body.startswith(_PREFIX):
        return codec.decode_many(body, expect=Meter, trusted=True)  # v1
    try:
        _, version, fields = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types for bad bytes; all mean the same here
        raise codec.CodecError(f"snapshot of shard {shard}: not valid msgpack: {exc}") from None
    if not isinstance(version, int) or version > VERSION:
        raise codec.CodecError(f"snapshot of shard {shard}: body version {version!r} is newer than {VERSION}")
    try:
        METER_FLAT.check_versions(fields["versions"])
        meters: PackedTable | dict[str, bytes] = (
            PackedTable.from_base(*fields["base"]) if "base" in fields
            else _zipped(fields["accounts"], fields["meters"])
        )
        if fields["rules"] != rules:
            unpack = METER_FLAT.unpack
            return [unpack(account, packed) for account, packed in meters.items()]
        return ShardImage(
            shard=shard,
            meters=meters,
            relay_counts={RelayState(k): v for k, v in fields["relay"].items()},
            work_orders={WorkOrderAction(k): v for k, v in fields["work_orders"].items()},
            paid_off=fields["paid_off"],
            pending=frozenset(fields["pending"]),
            timers=_zipped(*fields["timers"]),
            prepaid_bands=fields.get("prepaid_bands", {}),
        )
    except codec.CodecError:
        raise
    except Exception as exc:  # a field missing or of the wrong shape: not a body we wrote
        why = f"{type(exc).__name__}: {exc}"
        raise codec.CodecError(f"snapshot of shard {shard}: malformed v2 body: {why}") from None


def _zipped(keys: list[Any], values: list[Any]) -> dict[Any, Any]:
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys for {len(values)} values")
    return dict(zip(keys, values, strict=True))


#: Default budget, CPU seconds, for what a restart spends beyond loading the snapshots (~0.05 s for
#: 7.25 lakh meters in v3 bodies): replaying the tail and following the commands in flight (~12 µs
#: each, bench_recovery). The tail gets what the commands in flight leave, never less than
#: TAIL_FLOOR_S (snapshots cannot shorten the follow: a head-end outage with 10^5 commands pending
#: costs more than a second whatever the tail).
RECOVERY_BUDGET_S = 0.7
TAIL_FLOOR_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRule:
    """When a group snapshots its logical shards.

    ``budget_s``: estimated CPU seconds the whole group's journal tail may cost to replay at recovery
    (the rest of a restart, loading the snapshots, is ~0.3 µs a meter). ``low_water``: once over it,
    snapshot until the tail would replay within this fraction of it. ``every``: a logical shard with
    this many events in its tail is snapshotted whatever the budget (bounds one shard's tail)."""

    budget_s: float = RECOVERY_BUDGET_S
    low_water: float = 0.5
    every: int = 200_000

    def __post_init__(self) -> None:
        if self.budget_s <= 0 or not 0 <= self.low_water <= 1 or self.every < 1:
            raise ValueError(f"bad snapshot rule {self!r}")


def plan(
    tails: Mapping[int, int],
    sizes: Mapping[int, int],
    *,
    seconds_per_event: float,
    rule: SnapshotRule,
    rewrite: Collection[int] = (),
    catching_up: bool = False,
) -> list[int]:
    """The logical shards to snapshot now, in the order to take them.

    ``tails``: events journaled since each shard's last snapshot; ``sizes``: meters of each shard (what
    its snapshot costs to write); ``rewrite``: shards whose snapshot must be written again (an older
    body format, other rules), first. Then every shard with ``rule.every`` events or more, longest
    tail first. Then, if the tail's estimated replay exceeds ``rule.budget_s`` (or ``catching_up``:
    a run started by an earlier call is not finished), the shards with the most tail events per
    meter until what is left would replay within ``rule.low_water`` of the budget."""
    out = [s for s in sorted(rewrite)]
    chosen = set(out)
    out += [s for n, s in sorted(((n, s) for s, n in tails.items() if n >= rule.every), reverse=True)
            if s not in chosen]
    chosen.update(out)
    left = sum(n for s, n in tails.items() if s not in chosen) * seconds_per_event
    if left <= (rule.budget_s * rule.low_water if catching_up else rule.budget_s):
        return out
    target = rule.budget_s * rule.low_water
    by_yield = sorted(((n / max(1, sizes.get(s, 0)), s) for s, n in tails.items()
                       if n > 0 and s not in chosen), reverse=True)
    for _, s in by_yield:
        if left <= target:
            break
        out.append(s)
        left -= tails[s] * seconds_per_event
    return out
