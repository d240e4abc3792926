"""The tamper-evident audit chain: its canonical encoding, defined once, and how a chain is verified.

Two kinds of chain, each appended in the same transaction as the rows it covers:

- ``journal:<shard>`` — one per logical shard, one link per journal segment (the events one commit
  journals to one logical shard; storage/segments.py). Every money event a shard decides
  (PaymentApplied …) and every relay command and final outcome (RelayCommandIssued/…Failed,
  RelayStateConfirmed …) is an event in a segment, so one hash per committed segment covers them::

      link = SHA-256( b"jodo-jl1" || u32 shard || u64 first_seq || u64 last_seq || prev_hash || events )

  (integers big-endian, prev_hash 32 bytes) where ``events`` is the segment's bytes exactly as stored.
- ``desk:<n>`` — one per desk ledger writer (SQLite: one, ``desk:0``; PostgreSQL: one per counter
  slot, see storage/postgres_desk.py), one link per ledger transaction that changed payments
  (payment accepted, credited, moved to suspense, suspense resolved). The link stores its record::

      record = msgpack([1, "desk", chain, seq, at, prev_hash, [image, …]])
      link   = SHA-256(record)

  and each ``image`` is the payment's row after the change, `PAYMENT_IMAGE` in that order, the
  body as its SHA-256 (`body_digest`, a column since the chain) and `audit_version` (+1 on every
  change, so the newest image of a payment wins whichever chain holds it).

msgpack (use_bin_type, ints as ints, no floats anywhere) is canonical for the desk's values: one
encoding for each. The first link of a chain has ``prev_hash`` = 32 zero bytes (`GENESIS`).

A **checkpoint** is canonical JSON (sorted keys, no spaces) naming every chain's head (store, chain,
seq, hash), signed with Ed25519 (jodo/audit.py holds the key). Verification (`verify_journal`,
`verify_desk`, `verify_checkpoint`) is pure over the rows a store hands over, so every backend
verifies the same way; it names the first record of each chain found edited, deleted, inserted or
reordered.

Stores created before the chain keep their old rows without hashes: a chain starts at the first
segment (ledger change) written after the upgrade, and verification says how many came before.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any, Protocol, cast

import msgpack

__all__ = [
    "DESK_STORE",
    "ENCODING_VERSION",
    "GENESIS",
    "PAYMENT_IMAGE",
    "AuditSource",
    "ChainHead",
    "CheckpointStore",
    "DeskLink",
    "Finding",
    "JournalLink",
    "StoredCheckpoint",
    "Verdict",
    "audit_store_name",
    "body_digest",
    "checkpoint_body",
    "desk_chain",
    "desk_link",
    "journal_chain",
    "journal_link_hash",
    "parse_checkpoint_body",
    "verify_checkpoint_heads",
    "verify_desk",
    "verify_journal",
]

ENCODING_VERSION = 1
GENESIS = bytes(32)

#: The columns of a payment image, in order (the body as its digest).
PAYMENT_IMAGE = (
    "payment_id", "gateway", "event_id", "account", "original_account", "amount_paise", "channel",
    "paid_at", "received_at", "committed_at", "receipt_seq", "status", "applied_at", "suspended_at",
    "resolved_at", "resolved_by", "shard", "body_digest", "audit_version",
)
_VERSION_AT = PAYMENT_IMAGE.index("audit_version")


DESK_STORE = "desk"


def audit_store_name(group: int) -> str:
    """How checkpoints and findings name a shard group's store (the same on every backend)."""
    return f"group:{group}"


def journal_chain(shard: int) -> str:
    return f"journal:{shard}"


def desk_chain(n: int) -> str:
    return f"desk:{n}"


_JOURNAL_HEADER = struct.Struct(">8sIQQ32s")  # tag, shard, first_seq, last_seq, prev_hash
_JOURNAL_TAG = b"jodo-jl1"  # journal link, encoding version 1


def journal_link_hash(prev: bytes, shard: int, first_seq: int, last_seq: int, events: bytes) -> bytes:
    """The link of one journal segment: one SHA-256 over a fixed 60-byte header and the stored bytes
    (a struct, not msgpack: ~1 µs a segment instead of ~3, on the journal's hot path)."""
    h = hashlib.sha256(_JOURNAL_HEADER.pack(_JOURNAL_TAG, shard, first_seq, last_seq, prev))
    h.update(events)
    return h.digest()


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def desk_link(
    chain: str, seq: int, at: int, prev: bytes, images: Sequence[Sequence[Any]]
) -> tuple[bytes, bytes]:
    """(record, hash) of one ledger transaction's link."""
    record = cast(bytes, msgpack.packb(
        [ENCODING_VERSION, "desk", chain, seq, at, prev, [list(i) for i in images]], use_bin_type=True
    ))
    return record, hashlib.sha256(record).digest()


# ---------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing wrong: where (store, chain, seq), what (edited/deleted/inserted/reordered), how."""

    store: str
    chain: str
    seq: int
    what: str
    detail: str

    def line(self) -> str:
        return f"{self.store} {self.chain} seq {self.seq}: {self.what}: {self.detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainHead:
    """A chain's newest link, as a checkpoint signs it."""

    store: str
    chain: str
    seq: int
    hash: bytes
    links: int = 0  # links verified (or counted) in this store
    first_seq: int = 0  # the seq the chain starts at (after pre-chain or pruned records)


@dataclass(slots=True)
class Verdict:
    """What verifying one or more stores found."""

    findings: list[Finding] = field(default_factory=list)
    heads: list[ChainHead] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    #: (store, chain) → seq → link hash, for the (chain, seq)s a caller asked for (a checkpoint's)
    hash_at: dict[tuple[str, str], dict[int, bytes]] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return not self.findings

    def extend(self, other: Verdict) -> None:
        self.findings.extend(other.findings)
        self.heads.extend(other.heads)
        self.notes.extend(other.notes)
        self.records += other.records
        for key, seqs in other.hash_at.items():
            self.hash_at.setdefault(key, {}).update(seqs)

    def keep(
        self, store: str, chain: str, seq: int, link: bytes, wanted: Collection[tuple[str, int]]
    ) -> None:
        if (chain, seq) in wanted:
            self.hash_at.setdefault((store, chain), {})[seq] = link


@dataclass(frozen=True, slots=True)
class JournalLink:
    """A journal segment as stored (prev_hash/hash are None for a segment from before the chain)."""

    shard: int
    first_seq: int
    last_seq: int
    events: bytes
    prev_hash: bytes | None
    hash: bytes | None


def _seqs(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


def verify_journal(
    store: str, links: Iterable[JournalLink], heads: Mapping[int, tuple[int, bytes | None]],
    wanted: Collection[tuple[str, int]] = (),
) -> Verdict:
    """Verify every logical shard's chain. `links`: segments ordered by (shard, first_seq);
    `heads`: shard → (last_seq, head hash) from the store's heads table."""
    verdict = Verdict()
    done = set()
    for shard, of_shard in groupby(links, attrgetter("shard")):  # one shard's links in memory at a time
        _verify_shard(store, shard, list(of_shard), heads.get(shard), verdict, wanted)
        done.add(shard)
    for shard in sorted(heads.keys() - done):
        _verify_shard(store, shard, [], heads[shard], verdict, wanted)
    return verdict


def _verify_shard(
    store: str, shard: int, links: list[JournalLink], head: tuple[int, bytes | None] | None, verdict: Verdict,
    wanted: Collection[tuple[str, int]],
) -> None:
    chain = journal_chain(shard)

    def found(seq: int, what: str, detail: str) -> None:
        verdict.findings.append(Finding(store=store, chain=chain, seq=seq, what=what, detail=detail))

    pre = 0  # events before the chain
    running: bytes | None = None  # the previous link's hash once the chain has started
    expected = links[0].first_seq if links else 1
    start = 0
    hashed = 0
    for link in links:
        span = _seqs(link.first_seq, link.last_seq)
        if link.first_seq > expected:
            found(expected, "deleted", f"seqs {_seqs(expected, link.first_seq - 1)} are missing"
                  f" (the next record is seq {span})")
            return
        if link.first_seq < expected:
            found(link.first_seq, "inserted", f"a record for seqs {span} overlaps seqs already chained")
            return
        expected = link.last_seq + 1
        if link.hash is None:
            if running is not None:
                found(link.first_seq, "edited", f"seqs {span} have no chain hash after the chain started")
                return
            pre += link.last_seq - link.first_seq + 1
            continue
        if running is None:
            start = link.first_seq
            # the first link: after pre-chain segments (or at seq 1) it starts from GENESIS; a
            # journal whose oldest segments were pruned starts from the stored prev_hash
            running = GENESIS if (pre or link.first_seq == 1) else (link.prev_hash or GENESIS)
        actual = journal_link_hash(running, shard, link.first_seq, link.last_seq, link.events)
        if link.prev_hash != running:
            moved = _moved_from(shard, link, links)
            if moved is not None:
                found(link.first_seq, "reordered", f"seqs {span} hold the record of seqs {moved}")
            else:
                found(link.first_seq, "inserted", f"seqs {span} do not follow the record before them"
                      " (previous hash differs): a record was inserted or replaced")
            return
        if actual != link.hash:
            moved = _moved_from(shard, link, links)
            if moved is not None:
                found(link.first_seq, "reordered", f"seqs {span} hold the events of seqs {moved}")
            else:
                found(link.first_seq, "edited", f"the events of seqs {span} differ from their hash")
            return
        running = actual
        hashed += 1
        verdict.keep(store, chain, link.last_seq, actual, wanted)
    last_seq = links[-1].last_seq if links else 0
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            found(last_seq + 1, "deleted", f"seqs {_seqs(last_seq + 1, head_seq)} (the newest) are missing;"
                  f" the head says seq {head_seq}")
            return
        if head_seq < last_seq:
            found(head_seq + 1, "inserted", f"seqs {_seqs(head_seq + 1, last_seq)} are past the head"
                  f" (seq {head_seq})")
            return
        if running is not None and head_hash != running:
            found(head_seq, "edited", "the head's hash differs from the newest record's")
            return
    if pre:
        verdict.notes.append(f"{store} {chain}: the chain starts at seq {start}; the {pre} event(s) before"
                             " it were written before the audit chain (not covered)")
    elif links and links[0].first_seq > 1:
        verdict.notes.append(f"{store} {chain}: starts at seq {links[0].first_seq}"
                             " (older records pruned after a snapshot)")
    verdict.records += hashed
    if running is not None:
        verdict.heads.append(ChainHead(store=store, chain=chain, seq=last_seq, hash=running, links=hashed,
                                       first_seq=start))


def _moved_from(shard: int, link: JournalLink, links: Sequence[JournalLink]) -> str | None:
    """Seqs of another link whose hash this link's events reproduce at that place: a swap (a copy,
    where the other link still holds the same events, is an insert, not a move)."""
    for other in links:
        if other is link or other.hash is None or other.prev_hash is None or other.events == link.events:
            continue
        again = journal_link_hash(other.prev_hash, shard, other.first_seq, other.last_seq, link.events)
        if again == other.hash:
            return _seqs(other.first_seq, other.last_seq)
    return None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint as a desk store keeps it (`sent_at` None until shipped off-site)."""

    id: int
    at: int
    body: bytes
    signature: bytes
    sent_at: int | None


@dataclass(frozen=True, slots=True)
class DeskLink:
    """A ledger chain row as stored."""

    chain: str
    seq: int
    record: bytes
    hash: bytes


def verify_desk(
    store: str,
    links: Iterable[DeskLink],
    heads: Mapping[str, tuple[int, bytes]],
    payments: Iterable[tuple[Sequence[Any], bytes]],
    *,
    pre_chain_receipts: int,
    wanted: Collection[tuple[str, int]] = (),
) -> Verdict:
    """Verify the ledger's chains (`links` ordered by (chain, seq); `heads`: chain → (seq, hash)),
    then every payment row against the newest image the chains hold of it. `payments`: (image
    values in PAYMENT_IMAGE order as the table holds them, body) per row. Rows without an
    audit_version and receipt_seq <= `pre_chain_receipts` were written before the chain."""
    verdict = Verdict()
    images: dict[str, tuple[Sequence[Any], str, int]] = {}  # payment_id → (image, chain, seq)
    done = set()
    for chain, of_chain in groupby(links, attrgetter("chain")):  # streamed: no chain held in memory
        _verify_desk_chain(store, chain, of_chain, heads.get(chain), verdict, images, wanted)
        done.add(chain)
    for chain in sorted(heads.keys() - done):
        _verify_desk_chain(store, chain, iter(()), heads[chain], verdict, images, wanted)
    if verdict.findings:
        return verdict  # the images cannot be trusted: compare rows only against an intact chain
    _compare_rows(store, images, payments, pre_chain_receipts, verdict)
    return verdict


def _verify_desk_chain(
    store: str,
    chain: str,
    links: Iterable[DeskLink],
    head: tuple[int, bytes] | None,
    verdict: Verdict,
    images: dict[str, tuple[Sequence[Any], str, int]],
    wanted: Collection[tuple[str, int]],
) -> None:
    def found(seq: int, what: str, detail: str) -> None:
        verdict.findings.append(Finding(store=store, chain=chain, seq=seq, what=what, detail=detail))

    running = GENESIS
    expected = 1
    hashes: dict[bytes, int] = {}  # link hash → seq, of the links seen so far
    last = count = 0
    for link in links:
        hashes[link.hash] = link.seq
        last, count = link.seq, count + 1
        if link.seq > expected:
            found(expected, "deleted", f"links {_seqs(expected, link.seq - 1)} are missing")
            return
        if link.seq < expected:
            found(link.seq, "inserted", "a second link with this seq")
            return
        expected = link.seq + 1
        try:
            version, kind, r_chain, r_seq, _at, prev, _images = msgpack.unpackb(link.record, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            found(link.seq, "edited", f"the record does not decode ({type(exc).__name__})")
            return
        if hashlib.sha256(link.record).digest() != link.hash:
            found(link.seq, "edited", "the record differs from its hash")
            return
        if (version, kind, r_chain) != (ENCODING_VERSION, "desk", chain) or r_seq != link.seq:
            found(link.seq, "reordered",
                  f"the row at seq {link.seq} holds the record of {r_chain} seq {r_seq}")
            return
        if prev != running:
            if prev in hashes:
                found(link.seq, "reordered", f"the record follows seq {hashes[prev]}, not seq {link.seq - 1}")
            else:
                found(link.seq, "inserted", "the record does not follow the one before it (previous hash"
                      " differs): a record was inserted or replaced")
            return
        running = link.hash
        verdict.keep(store, chain, link.seq, link.hash, wanted)
        for image in _images:
            payment_id = image[0]
            held = images.get(payment_id)
            if held is None or image[_VERSION_AT] > held[0][_VERSION_AT]:
                images[payment_id] = (image, chain, link.seq)
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last:
            found(last + 1, "deleted", f"links {_seqs(last + 1, head_seq)} (the newest) are missing;"
                  f" the head says seq {head_seq}")
            return
        if head_seq < last or head_hash != running:
            found(head_seq, "edited",
                  f"the head (seq {head_seq}) does not match the newest link (seq {last})")
            return
    verdict.records += count
    if count:
        verdict.heads.append(ChainHead(store=store, chain=chain, seq=last, hash=running, links=count,
                                       first_seq=1))


def _compare_rows(
    store: str,
    images: dict[str, tuple[Sequence[Any], str, int]],
    payments: Iterable[tuple[Sequence[Any], bytes]],
    pre_chain_receipts: int,
    verdict: Verdict,
) -> None:
    seen: set[str] = set()
    pre = 0
    receipt_at = PAYMENT_IMAGE.index("receipt_seq")
    digest_at = PAYMENT_IMAGE.index("body_digest")

    def found(chain: str, seq: int, what: str, detail: str) -> None:
        verdict.findings.append(Finding(store=store, chain=chain, seq=seq, what=what, detail=detail))

    for row, body in payments:
        payment_id = row[0]
        seen.add(payment_id)
        held = images.get(payment_id)
        if held is None:
            if row[_VERSION_AT] is None and row[receipt_at] <= pre_chain_receipts:
                pre += 1
                continue
            found("payments", int(row[receipt_at]), "inserted",
                  f"payment {payment_id} is in the ledger but in no chain")
            continue
        image, chain, seq = held
        diffs = [
            f"{name} {image[i]!r} in the chain, {row[i]!r} in the table"
            for i, name in enumerate(PAYMENT_IMAGE) if _norm(image[i]) != _norm(row[i])
        ]
        if row[digest_at] is not None and body_digest(body) != _norm(row[digest_at]):
            diffs.append("body differs from its digest")
        if diffs:
            what = "reordered" if any(d.startswith("receipt_seq") for d in diffs) else "edited"
            found(chain, seq, what, f"payment {payment_id}: " + "; ".join(diffs))
    for payment_id in sorted(images.keys() - seen):
        _image, chain, seq = images[payment_id]
        found(chain, seq, "deleted", f"payment {payment_id} is in the chain but not in the ledger")
    verdict.records += len(seen)
    if pre:
        verdict.notes.append(f"{store}: {pre} payments were recorded before the audit chain and not changed"
                             " since (not covered)")


def _norm(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else value


# ---------------------------------------------------------------- checkpoints


def checkpoint_body(heads: Sequence[ChainHead], *, at: int, key_id: str) -> bytes:
    """The canonical bytes a checkpoint signs."""
    chains = sorted([h.store, h.chain, h.seq, h.hash.hex()] for h in heads)
    return json.dumps({"v": ENCODING_VERSION, "at": at, "key": key_id, "chains": chains},
                      sort_keys=True, separators=(",", ":")).encode()


def parse_checkpoint_body(body: bytes) -> tuple[int, str, list[ChainHead]]:
    """(at, key id, heads) of a checkpoint body; raises ValueError when it is not one."""
    data = json.loads(body)
    if not isinstance(data, dict) or data.get("v") != ENCODING_VERSION:
        raise ValueError("not a version-1 audit checkpoint")
    heads = [ChainHead(store=str(s), chain=str(c), seq=int(q), hash=bytes.fromhex(h))
             for s, c, q, h in data["chains"]]
    return int(data["at"]), str(data["key"]), heads


def verify_checkpoint_heads(
    label: str, signed: Sequence[ChainHead], hash_at: Mapping[tuple[str, str], Mapping[int, bytes]],
    current: Mapping[tuple[str, str], ChainHead],
) -> list[Finding]:
    """Findings for every head a checkpoint signed that the chains no longer reproduce.
    `hash_at`: (store, chain) → seq → link hash (journal: keyed by each segment's last seq)."""
    findings = []
    for h in signed:
        key = (h.store, h.chain)
        now = current.get(key)
        if now is None or now.seq < h.seq:
            have = 0 if now is None else now.seq
            findings.append(Finding(store=h.store, chain=h.chain, seq=h.seq, what="deleted",
                                    detail=f"{label} signed seq {h.seq}; the chain now ends at seq {have}"))
            continue
        stored = hash_at.get(key, {}).get(h.seq)
        if stored != h.hash:
            findings.append(Finding(store=h.store, chain=h.chain, seq=h.seq, what="edited",
                                    detail=f"the chain was rewritten: seq {h.seq} no longer has the hash"
                                    f" {label} signed"))
    return findings


class AuditSource(Protocol):
    """What a store with an audit chain offers (the SQLite and PostgreSQL stores; not memory)."""

    def audit_heads(self) -> list[ChainHead]: ...

    def audit_verify(self, wanted: Collection[tuple[str, int]] = ()) -> Verdict: ...


class CheckpointStore(AuditSource, Protocol):
    """A desk store: it also keeps the signed checkpoints (`sent_at` None until shipped off-site)."""

    def put_audit_checkpoint(self, *, at: int, body: bytes, signature: bytes) -> int: ...

    def audit_checkpoints(self, *, unsent: bool = False, limit: int = 100) -> list[StoredCheckpoint]: ...

    def mark_checkpoints_sent(self, ids: Iterable[int], *, at: int) -> None: ...
