"""Storage records refuse bad fields at construction, naming the field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from storage import (
    CreditAck,
    CreditOutcome,
    DeadLetter,
    InvalidRecord,
    NewEvent,
    NewOutboxEntry,
    NewPayment,
    OutboxStatus,
    OutboxUpdate,
    Snapshot,
    StoreOptions,
    WriteRejected,
)

EVENT = NewEvent(shard=0, account="a", kind="k", ref=None, at=0, body=b"")
PAYMENT = NewPayment(
    payment_id="p",
    gateway="g",
    event_id=None,
    account="a",
    amount_paise=1,
    channel="upi",
    paid_at=0,
    received_at=0,
    body=b"",
)


@pytest.mark.parametrize(
    ("record", "field", "value"),
    [
        (EVENT, "shard", -1),
        (EVENT, "account", ""),
        (EVENT, "kind", 3),
        (EVENT, "ref", ""),
        (EVENT, "at", 1.5),
        (EVENT, "body", "text"),
        (EVENT, "body", bytearray(b"x")),
        (PAYMENT, "amount_paise", 0),
        (PAYMENT, "amount_paise", 10.0),
        (PAYMENT, "amount_paise", True),
        (PAYMENT, "event_id", ""),
        (PAYMENT, "payment_id", None),
        (PAYMENT, "shard", -1),
        (PAYMENT, "shard", "3"),
        (PAYMENT, "shard", True),
        (Snapshot(shard=0, upto_seq=0, at=0, body=b""), "upto_seq", -1),
        (NewOutboxEntry(id="c", shard=0, kind="k", account="a", at=0, body=b""), "id", ""),
        (DeadLetter(source="s", message_type="m", reason="", at=0, body=b""), "reason", None),
        (CreditAck(payment_id="p", account="a", outcome=CreditOutcome.APPLIED, at=0), "outcome", "applied"),
    ],
)
def test_a_record_with_a_bad_field_is_refused_naming_it(record: Any, field: str, value: Any) -> None:
    with pytest.raises(InvalidRecord, match=field):
        dataclasses.replace(record, **{field: value})


def test_a_payment_may_name_its_logical_shard_or_none() -> None:
    assert PAYMENT.shard is None
    assert dataclasses.replace(PAYMENT, shard=0).shard == 0


def test_a_refused_record_is_a_value_error_and_a_rejected_write() -> None:
    with pytest.raises(ValueError) as raised:
        dataclasses.replace(EVENT, shard=-1)
    assert isinstance(raised.value, WriteRejected)


def test_an_outbox_update_cannot_move_an_entry_back_to_pending() -> None:
    with pytest.raises(InvalidRecord):
        OutboxUpdate(id="c", status=OutboxStatus.PENDING, at=0)


def test_only_pending_and_sent_are_open_outbox_states() -> None:
    assert [s for s in OutboxStatus if s.is_open] == [OutboxStatus.PENDING, OutboxStatus.SENT]


@pytest.mark.parametrize(
    "options",
    [{"synchronous": "off"}, {"keep_snapshots": 0}, {"busy_timeout_ms": -1}],
)
def test_store_options_refuse_values_that_would_weaken_the_store(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord):
        StoreOptions(**options)
