"""A common payment is journaled as ONE `PaymentReconnect` record (issue 13), losslessly: it expands
to exactly the events decide emitted, and old journals (the events one by one) and new ones replay
to the same meter."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import protocols  # noqa: F401  (registers the meter core)
from actors.shard_service import journal_records
from domain.enums import CommandOrigin, RelayState
from domain.events import (
    DisconnectionNoticeWithdrawn,
    MeterEvent,
    PaymentApplied,
    PaymentReconnect,
    RelayCommandIssued,
    RelayTargetSet,
)
from domain.fused import expand, expand_all, fuse_all, fuse_shard_events
from domain.meter import apply_all
from domain.sharding import logical_shard
from protocols import codec
from storage.api import StoreOptions
from storage.records import NewEvent
from storage.sqlite import open_shard_store
from tests.unit.test_meter_support import ACCOUNT, Sim, at, disconnected_meter, overdue_meter
from tests.unit.test_protocol_roundtrip import stories
from tests.unit.test_shard_service import service as shard_service_on


def _paid(s: Sim, amount: int = 500_000) -> list[MeterEvent]:
    before = len(s.journal)
    s.pay(s.now + 60, amount, "P-1")
    return list(s.journal[before:])


def test_a_payment_that_reconnects_a_meter_cut_after_notice_is_one_record() -> None:
    s = disconnected_meter()
    assert s.m.notice_at is not None  # the realistic case: cut after a served notice
    events = _paid(s)
    assert [type(e) for e in events] == [
        PaymentApplied, DisconnectionNoticeWithdrawn, RelayTargetSet, RelayCommandIssued
    ]
    fused = fuse_all(events)
    assert len(fused) == 1 and isinstance(fused[0], PaymentReconnect)
    assert fused[0].notice_withdrawn == events[1].reason  # type: ignore[union-attr]
    assert list(expand(fused[0])) == events


def test_a_payment_for_a_meter_registered_off_is_one_record_without_a_notice() -> None:
    s = Sim().register(at(2025, 3, 1, 10), relay=RelayState.DISCONNECTED, opening_dues_paise=150_000)
    events = _paid(s, 150_000)
    fused = fuse_all(events)
    assert [type(e) for e in fused] == [PaymentReconnect]
    assert fused[0].notice_withdrawn is None  # type: ignore[union-attr]
    assert expand_all(fused) == events


def test_a_part_payment_is_not_fused() -> None:
    s = disconnected_meter()
    events = _paid(s, 5_000)
    assert fuse_all(events) == events


@pytest.mark.parametrize("change", [
    {"attempt": 2}, {"origin": CommandOrigin.ENGINEER}, {"engineer_id": "E1"}, {"correlation_id": "other"},
    {"reason": "another reason"}, {"at": 1}, {"account": "N0000000009"},
])
def test_a_run_differing_in_any_field_the_record_cannot_carry_stays_as_it_is(change: dict[str, Any]) -> None:
    events = _paid(disconnected_meter())
    changed = [*events[:-1], dataclasses.replace(events[-1], **change)]
    assert fuse_all(changed) == changed


def test_every_story_expands_to_its_journal_and_replays_to_the_same_meter_from_any_record() -> None:
    fused_any = 0
    for sim in stories():
        journal = list(sim.journal)
        fused = fuse_all(journal)
        fused_any += sum(isinstance(e, PaymentReconnect) for e in fused)
        assert expand_all(fused) == journal
        assert apply_all(None, fused) == apply_all(None, journal)
        # every prefix of the fused journal is a prefix of the old one, replayed to the same state
        k = 0
        for i, record in enumerate(fused):
            k += len(expand(record))
            assert apply_all(None, fused[: i + 1]) == apply_all(None, journal[:k])
        # what the journal carries decodes to itself, trusted or validated
        assert codec.decode_many(codec.encode_many(fused), trusted=True) == fused
        assert codec.decode_many(codec.encode_many(fused)) == fused
    assert fused_any >= 3


def test_fusing_a_step_keeps_each_record_on_its_logical_shard() -> None:
    a, b = disconnected_meter(), overdue_meter()
    pairs = [(7, e) for e in _paid(a)] + [(9, e) for e in b.journal[-2:]]
    out = fuse_shard_events(pairs)
    assert out[0][0] == 7 and isinstance(out[0][1], PaymentReconnect)
    assert out[1:] == pairs[4:]


def test_a_journal_of_single_events_and_one_of_fused_records_recover_the_same_meter(tmp_path: Path) -> None:
    s = disconnected_meter()
    s.pay(s.now + 60, 500_000, "P-1")
    s.connected_ok(s.now + 5)
    journal = list(s.journal)
    shard = logical_shard(ACCOUNT)
    recovered = []
    for name, records in (
        ("old", [NewEvent(shard=shard, account=e.account, kind=type(e).__name__, ref=None, at=e.at,
                          body=codec.encode(e)) for e in journal]),
        ("new", journal_records((shard, e) for e in journal)),
    ):
        store = open_shard_store(tmp_path / name, 0, StoreOptions(synchronous="normal"))
        store.commit(records)
        store.close()
        service = shard_service_on(tmp_path / name)
        recovered.append(service.host.get(ACCOUNT))
        service.store.close()
    assert len(journal_records((shard, e) for e in journal)) < len(journal)
    assert recovered[0] == recovered[1] == s.m
