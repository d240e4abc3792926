"""The storage contract: every backend must pass these, unchanged.

A backend's test module subclasses `ShardStoreContract` and `DeskStoreContract` (their names do
not start with Test, so pytest collects them only through a subclass) and overrides the `backend`
fixture. See tests/contract/test_storage_sqlite.py and test_storage_memory.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import (
    AckResult,
    CreditAck,
    CreditOutcome,
    DeadLetter,
    DeskStore,
    HeadMismatch,
    JournalEvent,
    NewEvent,
    NewOutboxEntry,
    NewPayment,
    OutboxStatus,
    OutboxUpdate,
    PaymentStatus,
    RecordOutcome,
    ResolveResult,
    ShardStore,
    Snapshot,
    SnapshotAheadOfJournal,
    StorageBackend,
    StoreClosed,
    StoreOptions,
    UnknownOutboxEntry,
    UnknownPayment,
    WriteRejected,
)

GROUP = 7


def event(
    shard: int,
    account: str,
    *,
    kind: str = "Noted",
    ref: str | None = None,
    at: int = 1_000,
    body: bytes = b"",
) -> NewEvent:
    return NewEvent(shard=shard, account=account, kind=kind, ref=ref, at=at, body=body)


def entry(entry_id: str, *, shard: int = 1, kind: str = "relay", at: int = 1_000) -> NewOutboxEntry:
    return NewOutboxEntry(
        id=entry_id, shard=shard, kind=kind, account=f"acct-{entry_id}", at=at, body=entry_id.encode()
    )


def update(entry_id: str, status: OutboxStatus, at: int = 2_000) -> OutboxUpdate:
    return OutboxUpdate(id=entry_id, status=status, at=at)


def snapshot(shard: int, upto_seq: int, body: bytes = b"state", at: int = 5_000) -> Snapshot:
    return Snapshot(shard=shard, upto_seq=upto_seq, at=at, body=body)


def bodies(events: list[JournalEvent]) -> list[bytes]:
    return [e.body for e in events]


class _BackendFixtures:
    @pytest.fixture
    def backend(self) -> StorageBackend:
        raise NotImplementedError("a backend's test module overrides this fixture")

    @pytest.fixture
    def location(self, tmp_path: Path) -> Path:
        return tmp_path / "data"


class ShardStoreContract(_BackendFixtures):
    @pytest.fixture
    def store(self, backend: StorageBackend, location: Path) -> Iterator[ShardStore]:
        with backend.open_shard_store(location, GROUP) as store:
            yield store

    # ------------------------------------------------------------ journal

    def test_a_new_store_has_no_heads_snapshots_or_outbox(self, store: ShardStore) -> None:
        assert store.group == GROUP
        assert store.heads() == {}
        assert store.head(3) == 0
        assert store.latest_snapshot(3) is None
        assert list(store.recover()) == []
        assert list(store.open_outbox()) == []

    def test_commit_assigns_gap_free_seqs_per_shard_in_input_order(self, store: ShardStore) -> None:
        result = store.commit([event(1, "a"), event(2, "b"), event(1, "c"), event(1, "d")])
        assert result.seqs == (1, 1, 2, 3)
        assert dict(result.heads) == {1: 3, 2: 1}
        assert [(e.seq, e.account) for e in store.journal(1)] == [(1, "a"), (2, "c"), (3, "d")]

    def test_seqs_continue_across_commits_and_after_reopening(
        self, backend: StorageBackend, location: Path, store: ShardStore
    ) -> None:
        store.commit([event(1, "a"), event(1, "b")])
        store.close()
        with backend.open_shard_store(location, GROUP) as reopened:
            assert reopened.commit([event(1, "c")]).seqs == (3,)
            assert [e.seq for e in reopened.journal(1)] == [1, 2, 3]
            assert reopened.heads() == {1: 3}

    def test_a_commit_of_nothing_changes_nothing(self, store: ShardStore) -> None:
        result = store.commit()
        assert result.seqs == () and dict(result.heads) == {}
        assert store.heads() == {}

    def test_journal_returns_every_field_as_committed(self, store: ShardStore) -> None:
        store.commit([event(4, "acct-9", kind="BillPosted", ref="bill-1", at=77, body=b"\x00\xff")])
        assert list(store.journal(4)) == [
            JournalEvent(
                shard=4, seq=1, account="acct-9", kind="BillPosted", ref="bill-1", at=77, body=b"\x00\xff"
            )
        ]

    def test_journal_streams_only_events_after_the_given_seq(self, store: ShardStore) -> None:
        for i in range(10):
            store.commit([event(1, f"a{i}"), event(1, f"b{i}")])
        assert [e.seq for e in store.journal(1, after_seq=15)] == [16, 17, 18, 19, 20]
        assert [e.seq for e in store.journal(1, after_seq=20)] == []

    def test_journal_streams_more_commits_than_fit_in_one_page(self, store: ShardStore) -> None:
        for i in range(300):
            store.commit([event(1, f"a{i}"), event(2, f"z{i}")])
        seqs = [e.seq for e in store.journal(1, after_seq=7)]
        assert seqs == list(range(8, 301))

    def test_two_handles_on_one_group_share_one_gap_free_sequence(
        self, backend: StorageBackend, location: Path, store: ShardStore
    ) -> None:
        with backend.open_shard_store(location, GROUP) as other:
            for i in range(5):
                store.commit([event(1, f"s{i}")])
                other.commit([event(1, f"o{i}")])
        assert [e.seq for e in store.journal(1)] == list(range(1, 11))

    def test_shard_groups_are_separate_stores(
        self, backend: StorageBackend, location: Path, store: ShardStore
    ) -> None:
        store.commit([event(1, "a")])
        with backend.open_shard_store(location, GROUP + 1) as other:
            assert other.heads() == {}
            assert other.commit([event(1, "b")]).seqs == (1,)

    def test_expected_heads_that_match_let_the_commit_through(self, store: ShardStore) -> None:
        store.commit([event(1, "a")])
        result = store.commit([event(1, "b"), event(2, "c")], expect_heads={1: 1, 2: 0})
        assert result.seqs == (2, 1)

    def test_an_expected_head_that_does_not_match_rejects_the_whole_commit(self, store: ShardStore) -> None:
        store.commit([event(1, "a")])
        with pytest.raises(HeadMismatch) as raised:
            store.commit([event(2, "b"), event(1, "c")], outbox=[entry("x")], expect_heads={1: 0})
        assert (raised.value.shard, raised.value.expected, raised.value.found) == (1, 0, 1)
        assert store.heads() == {1: 1}
        assert store.outbox_entry("x") is None

    # ------------------------------------------------------------ outbox

    def test_an_outbox_entry_starts_pending_and_moves_to_sent_then_done(self, store: ShardStore) -> None:
        store.commit(outbox=[entry("c1", at=10)])
        pending = store.outbox_entry("c1")
        assert pending is not None
        assert (pending.status, pending.attempts, pending.created_at) == (OutboxStatus.PENDING, 0, 10)
        assert (pending.account, pending.kind, pending.body) == ("acct-c1", "relay", b"c1")
        store.commit(outbox_updates=[update("c1", OutboxStatus.SENT, at=11)])
        store.commit(outbox_updates=[update("c1", OutboxStatus.DONE, at=12)])
        done = store.outbox_entry("c1")
        assert done is not None
        assert (done.status, done.attempts, done.created_at, done.updated_at) == (
            OutboxStatus.DONE,
            1,
            10,
            12,
        )

    def test_each_send_counts_an_attempt(self, store: ShardStore) -> None:
        store.commit(outbox=[entry("c1")])
        for _ in range(3):
            store.commit(outbox_updates=[update("c1", OutboxStatus.SENT)])
        found = store.outbox_entry("c1")
        assert found is not None and found.attempts == 3

    def test_inserting_an_existing_outbox_id_changes_nothing_and_is_reported(self, store: ShardStore) -> None:
        store.commit(outbox=[entry("c1", at=10)])
        store.commit(outbox_updates=[update("c1", OutboxStatus.SENT)])
        again = dataclasses.replace(entry("c1", at=99), body=b"other")
        result = store.commit(outbox=[again, entry("c2")])
        assert result.outbox_existing == ("c1",)
        kept = store.outbox_entry("c1")
        assert kept is not None
        assert (kept.status, kept.body, kept.created_at) == (OutboxStatus.SENT, b"c1", 10)

    def test_an_outbox_id_twice_in_one_commit_is_inserted_once(self, store: ShardStore) -> None:
        result = store.commit(outbox=[entry("c1", at=10), entry("c1", at=20)])
        assert result.outbox_existing == ("c1",)
        found = store.outbox_entry("c1")
        assert found is not None and found.created_at == 10

    def test_a_repeated_id_among_new_ones_keeps_the_new_ones_and_the_events(self, store: ShardStore) -> None:
        # the SQLite store inserts and updates on a fast path first and redoes only the outbox part when
        # an id repeats or is finished: the events and the other rows of the same commit must survive
        store.commit(outbox=[entry("c1", at=10), entry("d1")],
                     outbox_updates=[update("d1", OutboxStatus.DONE)])
        result = store.commit(
            [event(1, "a")],
            outbox=[entry("c0"), entry("c1", at=99), entry("c2")],
            outbox_updates=[update("c1", OutboxStatus.SENT, 11), update("d1", OutboxStatus.SENT, 12)],
        )
        assert (result.outbox_existing, result.outbox_ignored) == (("c1",), ("d1",))
        assert store.heads() == {1: 1}
        assert all(store.outbox_entry(i) is not None for i in ("c0", "c2"))
        c1, d1 = store.outbox_entry("c1"), store.outbox_entry("d1")
        assert c1 is not None and (c1.status, c1.created_at, c1.attempts) == (OutboxStatus.SENT, 10, 1)
        assert d1 is not None and d1.status is OutboxStatus.DONE

    def test_an_update_may_follow_its_insert_in_the_same_commit(self, store: ShardStore) -> None:
        store.commit(outbox=[entry("c1")], outbox_updates=[update("c1", OutboxStatus.SENT)])
        found = store.outbox_entry("c1")
        assert found is not None and found.status is OutboxStatus.SENT

    def test_updates_to_a_finished_outbox_entry_are_ignored_and_reported(self, store: ShardStore) -> None:
        store.commit(outbox=[entry("c1")], outbox_updates=[update("c1", OutboxStatus.FAILED, 5)])
        result = store.commit(
            outbox_updates=[update("c1", OutboxStatus.DONE, 6), update("c1", OutboxStatus.SENT, 7)]
        )
        assert result.outbox_ignored == ("c1", "c1")
        found = store.outbox_entry("c1")
        assert found is not None
        assert (found.status, found.updated_at, found.attempts) == (OutboxStatus.FAILED, 5, 0)

    def test_open_outbox_lists_pending_and_sent_oldest_first(self, store: ShardStore) -> None:
        store.commit(
            outbox=[
                entry("late", at=30),
                entry("b", at=10),
                entry("a", at=10),
                entry("done", at=1),
                entry("sent", at=20, kind="notice", shard=2),
            ],
            outbox_updates=[update("done", OutboxStatus.DONE), update("sent", OutboxStatus.SENT)],
        )
        assert [e.id for e in store.open_outbox()] == ["a", "b", "sent", "late"]
        assert [e.id for e in store.open_outbox(kind="notice")] == ["sent"]
        assert [e.id for e in store.open_outbox(shard=1)] == ["a", "b", "late"]
        assert [e.id for e in store.open_outbox(kind="relay", shard=2)] == []

    def test_open_outbox_streams_more_entries_than_one_page(self, store: ShardStore) -> None:
        store.commit(outbox=[entry(f"c{i:05d}", at=i % 7) for i in range(1_500)])
        listed = [(e.created_at, e.id) for e in store.open_outbox()]
        assert len(listed) == 1_500 and listed == sorted(listed)

    def test_open_outbox_is_counted_by_kind_and_status(self, store: ShardStore) -> None:
        store.commit(
            outbox=[entry("a"), entry("b"), entry("c", kind="notice"), entry("d")],
            outbox_updates=[update("b", OutboxStatus.SENT), update("d", OutboxStatus.DONE)],
        )
        assert store.count_open_outbox() == {
            ("relay", OutboxStatus.PENDING): 1,
            ("relay", OutboxStatus.SENT): 1,
            ("notice", OutboxStatus.PENDING): 1,
        }

    def test_an_update_of_an_unknown_outbox_id_rolls_back_the_whole_commit(self, store: ShardStore) -> None:
        store.commit([event(1, "a")], outbox=[entry("c1")])
        with pytest.raises(UnknownOutboxEntry) as raised:
            store.commit(
                [event(1, "b"), event(2, "c")],
                outbox=[entry("c2")],
                outbox_updates=[update("c1", OutboxStatus.SENT), update("nope", OutboxStatus.DONE)],
            )
        assert isinstance(raised.value, WriteRejected) and raised.value.entry_id == "nope"
        assert store.heads() == {1: 1}
        assert [e.account for e in store.journal(1)] == ["a"]
        assert store.outbox_entry("c2") is None
        c1 = store.outbox_entry("c1")
        assert c1 is not None and c1.status is OutboxStatus.PENDING
        assert store.commit([event(1, "d")]).seqs == (2,)

    # ------------------------------------------------------------ snapshots and recovery

    def test_the_latest_snapshot_is_the_one_with_the_highest_seq(self, store: ShardStore) -> None:
        store.commit([event(1, "a")] * 5)
        store.save_snapshots([snapshot(1, 4, b"four"), snapshot(1, 2, b"two")])
        assert store.latest_snapshot(1) == snapshot(1, 4, b"four")

    def test_saving_the_same_snapshot_seq_again_replaces_it(self, store: ShardStore) -> None:
        store.commit([event(1, "a")] * 2)
        store.save_snapshots([snapshot(1, 2, b"old")])
        store.save_snapshots([snapshot(1, 2, b"new")])
        assert store.latest_snapshot(1) == snapshot(1, 2, b"new")

    def test_a_snapshot_beyond_the_journal_head_is_rejected_with_its_whole_batch(
        self, store: ShardStore
    ) -> None:
        store.commit([event(1, "a"), event(2, "b")])
        with pytest.raises(SnapshotAheadOfJournal) as raised:
            store.save_snapshots([snapshot(1, 1), snapshot(2, 2)])
        assert (raised.value.shard, raised.value.upto_seq, raised.value.head) == (2, 2, 1)
        assert store.latest_snapshot(1) is None

    def test_a_snapshot_at_seq_zero_registers_a_shard_without_events(self, store: ShardStore) -> None:
        store.save_snapshots([snapshot(9, 0, b"imported")])
        assert store.heads() == {9: 0}
        assert list(store.recover()) == [snapshot(9, 0, b"imported")]
        assert store.commit([event(9, "a")]).seqs == (1,)

    def test_only_the_newest_snapshots_are_kept(self, backend: StorageBackend, location: Path) -> None:
        with backend.open_shard_store(location, GROUP, StoreOptions(keep_snapshots=1)) as store:
            store.commit([event(1, "a")] * 3)
            store.save_snapshots([snapshot(1, 1, b"one")])
            store.save_snapshots([snapshot(1, 3, b"three")])
            store.prune_journal(1, 3)
            assert store.latest_snapshot(1) == snapshot(1, 3, b"three")
            assert list(store.recover([1])) == [snapshot(1, 3, b"three")]

    def test_recovery_yields_the_latest_snapshots_then_each_shards_tail_in_order(
        self, store: ShardStore
    ) -> None:
        store.commit([event(2, f"x{i}", body=bytes([i])) for i in range(5)] + [event(1, "y")])
        store.save_snapshots([snapshot(2, 3, b"upto3")])
        store.commit([event(2, "x5", body=b"\x05"), event(1, "z"), event(3, "w")])
        store.save_snapshots([snapshot(3, 1, b"three")])
        steps = list(store.recover())
        assert steps[:2] == [snapshot(2, 3, b"upto3"), snapshot(3, 1, b"three")]
        events = [e for e in steps[2:] if isinstance(e, JournalEvent)]
        assert len(events) == len(steps) - 2
        tails = {shard: [(e.seq, e.account) for e in events if e.shard == shard] for shard in (1, 2, 3)}
        assert tails == {1: [(1, "y"), (2, "z")], 2: [(4, "x3"), (5, "x4"), (6, "x5")], 3: []}

    def test_recovery_streams_a_tail_of_many_commits(self, store: ShardStore) -> None:
        for i in range(150):
            store.commit([event(shard, f"a{i}") for shard in range(4)])
        store.save_snapshots([snapshot(0, 100)])
        events = [e for e in store.recover() if isinstance(e, JournalEvent)]
        assert [e.seq for e in events if e.shard == 0] == list(range(101, 151))
        assert [e.seq for e in events if e.shard == 3] == list(range(1, 151))

    def test_recovery_of_chosen_shards_reads_only_those(self, store: ShardStore) -> None:
        store.commit([event(1, "a"), event(2, "b"), event(3, "c")])
        assert [s.shard for s in store.recover([3, 1])] == [1, 3]
        assert list(store.recover([99])) == []

    def test_pruning_stops_at_the_latest_snapshot(self, store: ShardStore) -> None:
        for i in range(6):
            store.commit([event(1, f"a{i}")])
        assert store.prune_journal(1, 6) == 0  # no snapshot: nothing is covered
        store.save_snapshots([snapshot(1, 4)])
        removed = store.prune_journal(1, 6)
        assert removed <= 4
        assert [e.seq for e in store.journal(1, after_seq=4)] == [5, 6]
        assert store.heads() == {1: 6}
        assert store.commit([event(1, "a6")]).seqs == (7,)

    def test_recovery_after_pruning_gives_the_same_steps(self, store: ShardStore) -> None:
        for i in range(8):
            store.commit([event(1, f"a{i}"), event(2, f"b{i}")])
        store.save_snapshots([snapshot(1, 5), snapshot(2, 8)])
        before = list(store.recover())
        store.prune_journal(1, 5)
        store.prune_journal(2, 8)
        assert list(store.recover()) == before

    def test_prune_on_snapshot_keeps_the_tail_of_the_oldest_kept_snapshot(
        self, backend: StorageBackend, location: Path
    ) -> None:
        options = StoreOptions(keep_snapshots=2, prune_on_snapshot=True)
        with backend.open_shard_store(location, GROUP, options) as store:
            for i in range(9):
                store.commit([event(1, f"a{i}")])
            store.save_snapshots([snapshot(1, 3)])
            store.save_snapshots([snapshot(1, 6)])
            assert [e.seq for e in store.journal(1, after_seq=3)] == [4, 5, 6, 7, 8, 9]
            assert [e.seq for e in store.recover([1]) if isinstance(e, JournalEvent)] == [7, 8, 9]

    # ------------------------------------------------------------ audit

    def test_events_for_an_account_come_newest_first_up_to_the_limit(self, store: ShardStore) -> None:
        for i in range(10):
            store.commit([event(1, "mine", at=100 + i, body=bytes([i])), event(1, "other")])
        found = store.events_for_account(1, "mine", limit=3)
        assert [(e.seq, e.body) for e in found] == [(19, b"\x09"), (17, b"\x08"), (15, b"\x07")]
        assert len(store.events_for_account(1, "mine")) == 10
        assert store.events_for_account(2, "mine") == []

    def test_events_for_an_account_can_stop_at_a_time(self, store: ShardStore) -> None:
        for i in range(10):
            store.commit([event(1, "mine", at=100 + i)])
        assert [e.at for e in store.events_for_account(1, "mine", since=107)] == [109, 108, 107]

    def test_events_for_a_ref_come_oldest_first(self, store: ShardStore) -> None:
        store.commit([event(1, "a", ref="pay-1", kind="PaymentApplied"), event(1, "a", ref="x")])
        store.commit([event(1, "a", ref="pay-1", kind="RelayCommanded", at=2_000), event(1, "a")])
        found = store.events_for_ref(1, "pay-1")
        assert [(e.seq, e.kind) for e in found] == [(1, "PaymentApplied"), (3, "RelayCommanded")]
        assert [e.seq for e in store.events_for_ref(1, "pay-1", since=1_500)] == [3]
        assert store.events_for_ref(1, "pay-2") == []

    def test_an_id_mentioned_in_another_events_body_is_not_a_match(self, store: ShardStore) -> None:
        store.commit([event(1, "other", body=b"\xa4mine pay-1"), event(1, "x", kind="mine")])
        assert store.events_for_account(1, "mine") == []
        assert store.events_for_ref(1, "pay-1") == []

    def test_audit_reads_many_segments(self, store: ShardStore) -> None:
        for i in range(200):
            store.commit([event(1, "mine", ref="r", at=i), event(1, f"n{i}", ref="r")])
        assert len(store.events_for_account(1, "mine", limit=150)) == 150
        assert len(store.events_for_ref(1, "r")) == 400

    # ------------------------------------------------------------ lifecycle

    def test_a_closed_store_refuses_every_call(self, store: ShardStore) -> None:
        store.close()
        store.close()  # idempotent
        with pytest.raises(StoreClosed):
            store.commit([event(1, "a")])
        with pytest.raises(StoreClosed):
            store.heads()
        with pytest.raises(StoreClosed):
            list(store.journal(1))


class DeskStoreContract(_BackendFixtures):
    @pytest.fixture
    def desk(self, backend: StorageBackend, location: Path) -> Iterator[DeskStore]:
        with backend.open_desk_store(location) as desk:
            yield desk

    # ------------------------------------------------------------ ledger

    def test_new_payments_are_recorded_pending_in_receipt_order(self, desk: DeskStore) -> None:
        results = desk.record_payments([payment("p1"), payment("p2", account="acct-2")], at=50)
        assert [(r.outcome, r.stored_payment_id, r.receipt_seq) for r in results] == [
            (RecordOutcome.NEW, "p1", 1),
            (RecordOutcome.NEW, "p2", 2),
        ]
        stored = desk.payment("p2")
        assert stored is not None
        assert (stored.status, stored.committed_at, stored.account, stored.amount_paise) == (
            PaymentStatus.PENDING,
            50,
            "acct-2",
            10_000,
        )
        assert (stored.received_at, stored.paid_at, stored.body) == (20, 10, b"p2")
        assert [p.payment_id for p in desk.unacknowledged()] == ["p1", "p2"]

    def test_a_payment_id_seen_before_is_a_duplicate_and_changes_nothing(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1", amount=500)], at=50)
        again = payment("p1", amount=999, event_id="other")
        (result,) = desk.record_payments([again], at=60)
        assert (result.outcome, result.stored_payment_id, result.receipt_seq) == (
            RecordOutcome.DUPLICATE,
            "p1",
            1,
        )
        stored = desk.payment("p1")
        assert stored is not None and (stored.amount_paise, stored.committed_at) == (500, 50)
        assert desk.payment_counts().duplicates == 1

    def test_the_same_gateway_event_under_another_payment_id_is_a_duplicate(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1", event_id="evt-1")], at=50)
        (result,) = desk.record_payments([payment("p9", event_id="evt-1")], at=60)
        assert (result.payment_id, result.outcome, result.stored_payment_id) == (
            "p9",
            RecordOutcome.DUPLICATE,
            "p1",
        )
        assert desk.payment("p9") is None

    def test_the_same_event_id_at_another_gateway_is_a_new_payment(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1", event_id="evt-1")], at=50)
        (result,) = desk.record_payments([payment("p2", event_id="evt-1", gateway="bbps")], at=60)
        assert result.outcome is RecordOutcome.NEW

    def test_payments_without_event_ids_never_collide_on_them(self, desk: DeskStore) -> None:
        results = desk.record_payments([payment("p1"), payment("p2")], at=50)
        assert [r.outcome for r in results] == [RecordOutcome.NEW, RecordOutcome.NEW]

    def test_duplicates_within_one_batch_are_reported(self, desk: DeskStore) -> None:
        results = desk.record_payments(
            [payment("p1", event_id="e1"), payment("p1"), payment("p2", event_id="e1")], at=50
        )
        assert [(r.outcome, r.stored_payment_id) for r in results] == [
            (RecordOutcome.NEW, "p1"),
            (RecordOutcome.DUPLICATE, "p1"),
            (RecordOutcome.DUPLICATE, "p1"),
        ]
        assert desk.payment_counts().pending == 1

    def test_a_stored_duplicate_among_new_ones_leaves_the_receipts_contiguous(self, desk: DeskStore) -> None:
        # the SQLite desk inserts a batch in one statement first and redoes it row by row when one is a
        # duplicate: numbers must come out as if it had gone row by row from the start
        desk.record_payments([payment("p1", amount=500)], at=50)
        results = desk.record_payments([payment("p0"), payment("p1", amount=999), payment("p2")], at=60)
        assert [(r.outcome, r.receipt_seq) for r in results] == [
            (RecordOutcome.NEW, 2), (RecordOutcome.DUPLICATE, 1), (RecordOutcome.NEW, 3)]
        kept = desk.payment("p1")
        assert kept is not None and (kept.amount_paise, kept.committed_at) == (500, 50)
        (p3,) = desk.record_payments([payment("p3")], at=70)
        assert p3.receipt_seq == 4
        assert [p.payment_id for p in desk.unacknowledged()] == ["p1", "p0", "p2", "p3"]

    def test_an_invalid_payment_rolls_back_its_whole_batch(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p0")], at=40)
        broken = payment("p2")
        object.__setattr__(broken, "amount_paise", 0)  # as if built past its checks
        with pytest.raises(WriteRejected):
            desk.record_payments([payment("p1"), broken, payment("p3")], at=50)
        assert desk.payment("p1") is None and desk.payment("p3") is None
        assert desk.payment_counts().pending == 1
        (after,) = desk.record_payments([payment("p4")], at=60)
        assert after.receipt_seq == 2

    # ------------------------------------------------------------ credit acknowledgements

    def test_an_applied_acknowledgement_marks_the_payment_applied(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1"), payment("p2")], at=50)
        assert desk.mark_credited([ack("p1", at=70)]) == (AckResult.RECORDED,)
        stored = desk.payment("p1")
        assert stored is not None
        assert (stored.status, stored.applied_at) == (PaymentStatus.APPLIED, 70)
        assert [p.payment_id for p in desk.unacknowledged()] == ["p2"]

    def test_an_unknown_account_acknowledgement_moves_the_payment_to_suspense(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1"), payment("p2")], at=50)
        desk.mark_credited([ack("p2", CreditOutcome.UNKNOWN_ACCOUNT, at=70)])
        assert [p.payment_id for p in desk.suspense()] == ["p2"]
        assert desk.count_suspense() == 1
        stored = desk.payment("p2")
        assert stored is not None and stored.suspended_at == 70
        assert [p.payment_id for p in desk.unacknowledged()] == ["p1"]

    def test_a_repeated_acknowledgement_is_a_duplicate(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1")], at=50)
        results = desk.mark_credited([ack("p1", at=70), ack("p1", at=80)])
        assert results == (AckResult.RECORDED, AckResult.DUPLICATE)
        stored = desk.payment("p1")
        assert stored is not None and stored.applied_at == 70

    def test_an_acknowledgement_that_contradicts_the_recorded_one_is_stale(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1")], at=50)
        desk.mark_credited([ack("p1")])
        assert desk.mark_credited([ack("p1", CreditOutcome.UNKNOWN_ACCOUNT)]) == (AckResult.STALE,)
        assert desk.mark_credited([ack("p1", account="acct-x")]) == (AckResult.STALE,)
        stored = desk.payment("p1")
        assert stored is not None and stored.status is PaymentStatus.APPLIED

    def test_an_acknowledgement_for_an_unknown_payment_rolls_back_the_batch(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1")], at=50)
        with pytest.raises(UnknownPayment) as raised:
            desk.mark_credited([ack("p1"), ack("ghost")])
        assert raised.value.payment_id == "ghost"
        stored = desk.payment("p1")
        assert stored is not None and stored.status is PaymentStatus.PENDING
        assert desk.payment_counts().applied == 0

    def test_unacknowledged_payments_stream_in_receipt_order(self, desk: DeskStore) -> None:
        desk.record_payments([payment(f"p{i:04d}") for i in range(1_200)], at=50)
        desk.mark_credited([ack(f"p{i:04d}") for i in range(0, 1_200, 3)])
        listed = [p.receipt_seq for p in desk.unacknowledged()]
        assert listed == [i + 1 for i in range(1_200) if i % 3]
        assert [p.receipt_seq for p in desk.unacknowledged(after_receipt_seq=1_195)] == [
            1_196,
            1_197,
            1_199,
            1_200,
        ]

    def test_unacknowledged_of_some_shards_lists_only_payments_recorded_with_them(
        self, desk: DeskStore
    ) -> None:
        desk.record_payments([payment(f"p{i}", account=f"a{i}", shard=i % 4) for i in range(12)]
                             + [payment("old", account="x")], at=50)
        desk.mark_credited([ack("p1", account="a1")])
        mine = desk.unacknowledged(shards=[1, 3])
        assert [(p.payment_id, p.shard) for p in mine] == [
            ("p3", 3), ("p5", 1), ("p7", 3), ("p9", 1), ("p11", 3)]
        assert [p.payment_id for p in desk.unacknowledged(shards=[])] == []
        assert len(list(desk.unacknowledged())) == 12  # the one without a shard too
        stored = desk.payment("p2")
        assert stored is not None and stored.shard == 2

    def test_resolving_suspense_moves_the_payment_to_the_new_accounts_shard(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1", account="typo", shard=5)], at=50)
        desk.mark_credited([ack("p1", CreditOutcome.UNKNOWN_ACCOUNT, account="typo")])
        assert desk.resolve_suspense("p1", "acct-1", at=90, by="eng-7", shard=9) is ResolveResult.RESOLVED
        assert [p.payment_id for p in desk.unacknowledged(shards=[9])] == ["p1"]
        assert list(desk.unacknowledged(shards=[5])) == []

    # ------------------------------------------------------------ suspense

    def test_resolving_suspense_reassigns_the_account_and_makes_it_pending(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1", account="typo")], at=50)
        desk.mark_credited([ack("p1", CreditOutcome.UNKNOWN_ACCOUNT, account="typo")])
        result = desk.resolve_suspense("p1", "acct-1", at=90, by="eng-7")
        assert result is ResolveResult.RESOLVED
        stored = desk.payment("p1")
        assert stored is not None
        assert (stored.status, stored.account, stored.original_account) == (
            PaymentStatus.PENDING,
            "acct-1",
            "typo",
        )
        assert (stored.resolved_at, stored.resolved_by) == (90, "eng-7")
        assert [p.payment_id for p in desk.unacknowledged()] == ["p1"]
        assert desk.count_suspense() == 0
        late = ack("p1", CreditOutcome.UNKNOWN_ACCOUNT, account="typo")
        assert desk.mark_credited([late]) == (AckResult.STALE,)
        assert desk.mark_credited([ack("p1", account="acct-1")]) == (AckResult.RECORDED,)
        assert [p.payment_id for p in desk.payments_for_account("acct-1")] == ["p1"]

    def test_only_a_payment_in_suspense_can_be_resolved(self, desk: DeskStore) -> None:
        desk.record_payments([payment("p1")], at=50)
        assert desk.resolve_suspense("p1", "b", at=1, by="e") is ResolveResult.NOT_IN_SUSPENSE
        assert desk.resolve_suspense("zz", "b", at=1, by="e") is ResolveResult.UNKNOWN_PAYMENT

    def test_suspense_is_listed_in_receipt_order_in_pages(self, desk: DeskStore) -> None:
        desk.record_payments([payment(f"p{i}") for i in range(5)], at=50)
        desk.mark_credited([ack(f"p{i}", CreditOutcome.UNKNOWN_ACCOUNT) for i in (4, 1, 3)])
        assert [p.payment_id for p in desk.suspense(limit=2)] == ["p1", "p3"]
        assert [p.payment_id for p in desk.suspense(after_receipt_seq=4)] == ["p4"]

    # ------------------------------------------------------------ counts, audit, dead letters

    def test_payment_counts_follow_every_transition(self, desk: DeskStore) -> None:
        desk.record_payments([payment(f"p{i}") for i in range(4)] + [payment("p0")], at=50)
        desk.mark_credited([ack("p0"), ack("p1", CreditOutcome.UNKNOWN_ACCOUNT)])
        counts = desk.payment_counts()
        assert (counts.pending, counts.applied, counts.suspense, counts.duplicates) == (2, 1, 1, 1)
        desk.resolve_suspense("p1", "acct-1", at=60, by="eng")
        counts = desk.payment_counts()
        assert (counts.pending, counts.applied, counts.suspense) == (3, 1, 0)

    def test_payments_for_an_account_come_newest_first(self, desk: DeskStore) -> None:
        desk.record_payments([payment(f"p{i}", account="a" if i % 2 else "b") for i in range(7)], at=50)
        assert [p.payment_id for p in desk.payments_for_account("a", limit=2)] == ["p5", "p3"]
        assert desk.payments_for_account("nobody") == []

    def test_dead_letters_are_kept_counted_and_listed_newest_first(self, desk: DeskStore) -> None:
        letters = [
            DeadLetter(source="MeterShard", message_type=f"M{i}", reason="boom", at=i, body=bytes([i]))
            for i in range(5)
        ]
        assert desk.put_dead_letters(letters[:3]) == (1, 2, 3)
        assert desk.put_dead_letters(letters[3:]) == (4, 5)
        assert desk.count_dead_letters() == 5
        newest = desk.dead_letters(limit=2)
        assert [(d.id, d.message_type, d.body) for d in newest] == [(5, "M4", b"\x04"), (4, "M3", b"\x03")]
        assert [d.id for d in desk.dead_letters(before_id=4)] == [3, 2, 1]

    def test_everything_is_there_after_reopening(
        self, backend: StorageBackend, location: Path, desk: DeskStore
    ) -> None:
        desk.record_payments([payment("p1"), payment("p2")], at=50)
        desk.mark_credited([ack("p1")])
        desk.put_dead_letters([DeadLetter(source="s", message_type="m", reason="", at=1, body=b"")])
        desk.close()
        with backend.open_desk_store(location) as reopened:
            assert [p.payment_id for p in reopened.unacknowledged()] == ["p2"]
            assert reopened.payment_counts().applied == 1
            assert reopened.count_dead_letters() == 1
            assert reopened.record_payments([payment("p3")], at=60)[0].receipt_seq == 3

    def test_a_closed_desk_refuses_every_call(self, desk: DeskStore) -> None:
        desk.close()
        with pytest.raises(StoreClosed):
            desk.record_payments([payment("p1")], at=1)
        with pytest.raises(StoreClosed):
            desk.payment_counts()

    def test_payments_paid_in_a_window_are_listed_by_gateway_and_paid_at_in_pages(
        self, desk: DeskStore
    ) -> None:
        rows = [dataclasses.replace(payment(f"w{i:04d}"), paid_at=1_000 + i // 3) for i in range(1_200)]
        rows.append(dataclasses.replace(payment("other-gw", gateway="bbps"), paid_at=1_100))
        rows.append(dataclasses.replace(payment("too-late"), paid_at=2_000))
        desk.record_payments(rows, at=50)
        desk.mark_credited([ack("w0003")])
        found = list(desk.payments_paid_between("razorpay", 1_001, 1_399))
        # inclusive at both ends, more rows than any backend's page (500), in (paid_at, id) order
        assert [p.payment_id for p in found] == [f"w{i:04d}" for i in range(3, 1_200)]
        assert [(p.paid_at, p.payment_id) for p in found] == sorted((p.paid_at, p.payment_id) for p in found)
        assert found[0].status is PaymentStatus.APPLIED and found[1].status is PaymentStatus.PENDING
        assert list(desk.payments_paid_between("razorpay", 1_400, 1_999)) == []
        assert [p.payment_id for p in desk.payments_paid_between("bbps", 0, 3_000)] == ["other-gw"]


def payment(
    payment_id: str,
    *,
    account: str = "acct-1",
    amount: int = 10_000,
    gateway: str = "razorpay",
    event_id: str | None = None,
    shard: int | None = None,
) -> NewPayment:
    return NewPayment(
        shard=shard,
        payment_id=payment_id,
        gateway=gateway,
        event_id=event_id,
        account=account,
        amount_paise=amount,
        channel="upi",
        paid_at=10,
        received_at=20,
        body=payment_id.encode(),
    )


def ack(
    payment_id: str,
    outcome: CreditOutcome = CreditOutcome.APPLIED,
    *,
    account: str = "acct-1",
    at: int = 70,
) -> CreditAck:
    return CreditAck(payment_id=payment_id, account=account, outcome=outcome, at=at)
