"""Record types crossing the storage port: frozen, slotted, keyword-only, bytes for bodies.

Storage never decodes a body; callers encode (msgpack, elsewhere) and pass the few metadata
columns storage needs to index. Times are int epoch seconds from the caller's clock; money is
integer paise. Constructors check their invariants and raise `InvalidRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from storage.errors import InvalidRecord

__all__ = [
    "AckResult",
    "CommitResult",
    "CreditAck",
    "CreditOutcome",
    "DeadLetter",
    "JournalEvent",
    "NewEvent",
    "NewOutboxEntry",
    "NewPayment",
    "OutboxEntry",
    "OutboxStatus",
    "OutboxUpdate",
    "PaymentCounts",
    "PaymentRecord",
    "PaymentStatus",
    "RecordOutcome",
    "RecordResult",
    "ResolveResult",
    "Snapshot",
    "StoredDeadLetter",
    "check_payment",
]


def _text(name: str, value: object) -> None:
    if type(value) is not str or not value:
        raise InvalidRecord(f"{name} must be a non-empty str, got {value!r}")


def _opt_text(name: str, value: object) -> None:
    if value is not None:
        _text(name, value)


def _count(name: str, value: object, *, minimum: int = 0) -> None:
    if type(value) is not int or value < minimum:
        raise InvalidRecord(f"{name} must be an int >= {minimum}, got {value!r}")


def _bytes(name: str, value: object) -> None:
    if type(value) is not bytes:
        raise InvalidRecord(f"{name} must be bytes, got {type(value).__name__}")


# ---------------------------------------------------------------- shard group: journal


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to journal. Storage assigns its seq (gap-free per logical shard) at commit."""

    shard: int
    account: str
    kind: str
    ref: str | None  # payment_id, command_id or bill_id that caused it
    at: int
    body: bytes

    def __post_init__(self) -> None:
        _count("shard", self.shard)
        _text("account", self.account)
        _text("kind", self.kind)
        _opt_text("ref", self.ref)
        _count("at", self.at)
        _bytes("body", self.body)

    @classmethod
    def unchecked(
        cls, shard: int, account: str, kind: str, ref: str | None, at: int, body: bytes
    ) -> NewEvent:
        """Build without the field checks, for a caller whose values are typed records of its own
        (a shard journaling its meters' events: ~6 per payment, the checks were ~5 µs each)."""
        event = object.__new__(cls)
        _set_shard(event, shard)
        _set_account(event, account)
        _set_kind(event, kind)
        _set_ref(event, ref)
        _set_at(event, at)
        _set_body(event, body)
        return event


# the slots' own setters: frozen=True guards users, not this module
_set_shard, _set_account, _set_kind, _set_ref, _set_at, _set_body = (
    NewEvent.__dict__[name].__set__ for name in ("shard", "account", "kind", "ref", "at", "body")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEvent:
    """A committed event; `seq` runs 1, 2, 3 … without gaps within its logical shard."""

    shard: int
    seq: int
    account: str
    kind: str
    ref: str | None
    at: int
    body: bytes

    @classmethod
    def stored(
        cls, shard: int, seq: int, account: str, kind: str, ref: str | None, at: int, body: bytes
    ) -> JournalEvent:
        """Build one read back from storage (recovery reads every event of a journal tail: the frozen
        ``__init__`` sets each field through ``object.__setattr__``, twice as slow)."""
        event = object.__new__(cls)
        _set_j_shard(event, shard)
        _set_j_seq(event, seq)
        _set_j_account(event, account)
        _set_j_kind(event, kind)
        _set_j_ref(event, ref)
        _set_j_at(event, at)
        _set_j_body(event, body)
        return event


_set_j_shard, _set_j_seq, _set_j_account, _set_j_kind, _set_j_ref, _set_j_at, _set_j_body = (
    JournalEvent.__dict__[name].__set__ for name in ("shard", "seq", "account", "kind", "ref", "at", "body")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A logical shard's state folded from its journal up to and including `upto_seq`."""

    shard: int
    upto_seq: int
    at: int
    body: bytes

    def __post_init__(self) -> None:
        _count("shard", self.shard)
        _count("upto_seq", self.upto_seq)
        _count("at", self.at)
        _bytes("body", self.body)


# ---------------------------------------------------------------- shard group: outbox


class OutboxStatus(StrEnum):
    """pending → sent → done | failed; `sent` may repeat (a re-send); done and failed are final."""

    PENDING = "pending"
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in (OutboxStatus.PENDING, OutboxStatus.SENT)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewOutboxEntry:
    """An effect to deliver (relay command, consumer notice, work order); starts `pending`.

    `id` is unique in the store; inserting an existing id again changes nothing.
    """

    id: str
    shard: int
    kind: str
    account: str
    at: int
    body: bytes

    def __post_init__(self) -> None:
        _text("id", self.id)
        _count("shard", self.shard)
        _text("kind", self.kind)
        _text("account", self.account)
        _count("at", self.at)
        _bytes("body", self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxUpdate:
    """Move an outbox entry to `status` (sent, done or failed) at `at`."""

    id: str
    status: OutboxStatus
    at: int

    def __post_init__(self) -> None:
        _text("id", self.id)
        if not isinstance(self.status, OutboxStatus) or self.status is OutboxStatus.PENDING:
            raise InvalidRecord(f"status must be sent, done or failed, got {self.status!r}")
        _count("at", self.at)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """An outbox entry as stored; `attempts` counts the moves to `sent`."""

    id: str
    shard: int
    kind: str
    account: str
    status: OutboxStatus
    attempts: int
    created_at: int
    updated_at: int
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitResult:
    """What `ShardStore.commit` did.

    seqs: the seq assigned to each event, in the order the events were given.
    heads: for every shard the commit journaled to, its last seq after the commit.
    outbox_existing: ids of outbox inserts that were no-ops (the id already existed).
    outbox_ignored: ids of outbox updates that were no-ops (the entry was already done/failed).
    """

    seqs: tuple[int, ...] = ()
    heads: Mapping[int, int] = field(default_factory=dict)
    outbox_existing: tuple[str, ...] = ()
    outbox_ignored: tuple[str, ...] = ()


# ---------------------------------------------------------------- desk: payments ledger


class PaymentStatus(StrEnum):
    """pending (recorded, no shard has acknowledged it) → applied | suspense; resolve → pending."""

    PENDING = "pending"
    APPLIED = "applied"
    SUSPENSE = "suspense"


class RecordOutcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"


class CreditOutcome(StrEnum):
    """What a meter shard answered for a credited payment."""

    APPLIED = "applied"
    UNKNOWN_ACCOUNT = "unknown_account"


class AckResult(StrEnum):
    """What `mark_credited` did with one acknowledgement.

    RECORDED: the payment was pending for that account and now carries the outcome.
    DUPLICATE: the same outcome for the same account was already recorded (a re-delivery).
    STALE: ignored; the payment is no longer pending for that account (e.g. an acknowledgement
    from before a suspense resolution) or already carries the other outcome.
    """

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    STALE = "stale"


class ResolveResult(StrEnum):
    RESOLVED = "resolved"
    UNKNOWN_PAYMENT = "unknown_payment"
    NOT_IN_SUSPENSE = "not_in_suspense"


def check_payment(payment: NewPayment) -> None:
    """Raise `InvalidRecord` unless `payment` keeps its invariants (backends re-check with it)."""
    _text("payment_id", payment.payment_id)
    _text("gateway", payment.gateway)
    _opt_text("event_id", payment.event_id)
    _text("account", payment.account)
    _count("amount_paise", payment.amount_paise, minimum=1)
    _text("channel", payment.channel)
    _count("paid_at", payment.paid_at)
    _count("received_at", payment.received_at)
    _bytes("body", payment.body)
    if payment.shard is not None:
        _count("shard", payment.shard)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewPayment:
    """A payment as the front door received it. Duplicate = same payment_id, or same
    (gateway, event_id) when event_id is given."""

    payment_id: str
    gateway: str
    event_id: str | None
    account: str
    amount_paise: int
    channel: str
    paid_at: int
    received_at: int
    body: bytes
    shard: int | None = None  # the account's logical shard (a cluster's desks find their groups' payments)

    def __post_init__(self) -> None:
        check_payment(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResult:
    """Outcome of one payment in `record_payments`, in input order.

    For a DUPLICATE, `stored_payment_id` and `receipt_seq` are those of the payment already in
    the ledger (it may have another payment_id when matched by (gateway, event_id)).
    """

    payment_id: str
    outcome: RecordOutcome
    stored_payment_id: str
    receipt_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditAck:
    """A meter shard's answer for one payment credited to `account`."""

    payment_id: str
    account: str
    outcome: CreditOutcome
    at: int

    def __post_init__(self) -> None:
        _text("payment_id", self.payment_id)
        _text("account", self.account)
        if not isinstance(self.outcome, CreditOutcome):
            raise InvalidRecord(f"outcome must be a CreditOutcome, got {self.outcome!r}")
        _count("at", self.at)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecord:
    """A payment as the ledger holds it: the trace of one payment.

    receipt_seq orders payments by receipt (1, 2, 3 … in commit order). `account` is the
    current one; `original_account` is set once a suspense resolution re-assigned it.
    """

    payment_id: str
    gateway: str
    event_id: str | None
    account: str
    original_account: str | None
    amount_paise: int
    channel: str
    paid_at: int
    received_at: int
    committed_at: int
    receipt_seq: int
    status: PaymentStatus
    applied_at: int | None
    suspended_at: int | None
    resolved_at: int | None
    resolved_by: str | None
    body: bytes
    shard: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentCounts:
    """Payments in the ledger by status, plus duplicates refused since the ledger was created."""

    pending: int
    applied: int
    suspense: int
    duplicates: int


# ---------------------------------------------------------------- desk: dead letters


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message an actor could not process (PoisonMessage), kept for an operator."""

    source: str  # actor kind, e.g. "MeterShard"
    message_type: str
    reason: str
    at: int
    body: bytes

    def __post_init__(self) -> None:
        _text("source", self.source)
        _text("message_type", self.message_type)
        if type(self.reason) is not str:
            raise InvalidRecord(f"reason must be a str, got {self.reason!r}")
        _count("at", self.at)
        _bytes("body", self.body)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredDeadLetter:
    """A dead letter with the id the store gave it (1, 2, 3 … in commit order)."""

    id: int
    source: str
    message_type: str
    reason: str
    at: int
    body: bytes


def decide_acks(
    acks: Sequence[CreditAck], known: dict[str, tuple[PaymentStatus, str]]
) -> tuple[list[AckResult], dict[str, tuple[PaymentStatus, int]]]:
    """What `mark_credited` does with each acknowledgement, given every named payment's (status,
    account) as stored (`known`, updated in place as the batch goes): the results in order, and the
    status changes to write (payment id → (new status, at)). Raises UnknownPayment for a payment
    never recorded (the whole call is then refused). The same rules in every backend."""
    from storage.errors import UnknownPayment

    results: list[AckResult] = []
    changes: dict[str, tuple[PaymentStatus, int]] = {}
    for ack in acks:
        row = known.get(ack.payment_id)
        if row is None:
            raise UnknownPayment(ack.payment_id)
        status, account = row
        target = PaymentStatus.APPLIED if ack.outcome is CreditOutcome.APPLIED else PaymentStatus.SUSPENSE
        if account != ack.account:
            results.append(AckResult.STALE)
        elif status is target:
            results.append(AckResult.DUPLICATE)
        elif status is not PaymentStatus.PENDING:
            results.append(AckResult.STALE)
        else:
            known[ack.payment_id] = (target, account)  # a repeat later in the batch is a duplicate
            changes[ack.payment_id] = (target, ack.at)
            results.append(AckResult.RECORDED)
    return results, changes
