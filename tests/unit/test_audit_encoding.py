"""The audit chain's canonical encoding is fixed: a change to it would make every stored chain fail
to verify, so known vectors pin it (storage/audit.py defines it)."""

from __future__ import annotations

import hashlib

import msgpack

from storage.audit import (
    GENESIS,
    ChainHead,
    checkpoint_body,
    desk_link,
    journal_link_hash,
    parse_checkpoint_body,
)

IMAGE = ("pay_1", "g", None, "a", None, 100, "upi", 1, 1, 100, 1, "pending", None, None, None, None, 3,
         bytes(32), 1)


def test_a_journal_link_is_sha256_of_its_header_and_the_stored_events() -> None:
    link = journal_link_hash(GENESIS, 3, 1, 2, b"abc")
    header = b"jodo-jl1" + (3).to_bytes(4, "big") + (1).to_bytes(8, "big") + (2).to_bytes(8, "big") + GENESIS
    assert link == hashlib.sha256(header + b"abc").digest()
    assert link.hex() == "ae1079816283134bad9f8a7bc3e2069968f2024c1aab4c926f674e6911e12a6b"


def test_a_ledger_link_is_sha256_of_its_record() -> None:
    record, link = desk_link("desk:0", 1, 100, GENESIS, [IMAGE])
    assert msgpack.unpackb(record) == [1, "desk", "desk:0", 1, 100, GENESIS, [list(IMAGE)]]
    assert link == hashlib.sha256(record).digest()
    assert link.hex() == "9684927370cc68abe437de51e5e0754eafa4788ce9aa12fab0036b0d24d4aada"


def test_a_checkpoint_body_is_canonical_json_and_parses_back() -> None:
    head = ChainHead(store="desk", chain="desk:0", seq=1, hash=bytes.fromhex("96" * 32))
    body = checkpoint_body([head], at=100, key_id="k")
    assert body == b'{"at":100,"chains":[["desk","desk:0",1,"' + b"96" * 32 + b'"]],"key":"k","v":1}'
    at, key, heads = parse_checkpoint_body(body)
    assert (at, key, [(h.store, h.chain, h.seq, h.hash) for h in heads]) == (100, "k", [
        ("desk", "desk:0", 1, head.hash)])
