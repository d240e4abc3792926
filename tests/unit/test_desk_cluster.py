"""The desk in cluster mode: every node records into one ledger, but credits only its own groups.

Two `DeskService`s over one store stand for two nodes' desks over the shared PostgreSQL ledger
(the memory backend passes the same contract; here only the desk's own logic is under test).
"""

from __future__ import annotations

from pathlib import Path

from actors.desk_service import DeskService
from domain.effects import AckPayment
from domain.enums import PaymentOutcome
from protocols import codec
from protocols.payments import PaymentReceived
from storage import MemoryBackend
from storage.memory import forget

T0 = 1_717_000_000
GROUPS = 4


def pay(i: int) -> PaymentReceived:
    return PaymentReceived(payment_id=f"p{i}", account=f"N{i:010d}", amount_paise=10_000, channel="upi",
                           gateway="razorpay", paid_at=T0, received_at=T0)


def desks(tmp_path: Path) -> tuple[DeskService, DeskService]:
    forget(str(tmp_path))
    a = DeskService(store=MemoryBackend().open_desk_store(tmp_path), groups=GROUPS, cluster=True)
    b = DeskService(store=MemoryBackend().open_desk_store(tmp_path), groups=GROUPS, cluster=True)
    return a, b


def credited(desk: DeskService, group: int) -> list[str]:
    return [p.payment_id for batch in desk.batches(group)
            for p in codec.decode_many(batch.payload, trusted=True)]


def test_a_payment_for_a_group_served_elsewhere_is_recorded_but_not_credited_here(tmp_path: Path) -> None:
    a, b = desks(tmp_path)
    a.set_owned(frozenset({0, 1}))
    b.set_owned(frozenset({2, 3}))
    payments = [pay(i) for i in range(40)]
    (intake,) = a.receive_many([payments], T0)
    assert len(intake.accepted) == 40  # durable in the shared ledger whichever group
    mine = {p.payment_id for p in payments if a.group_of(p.account) in {0, 1}}
    assert 0 < len(mine) < 40
    assert {p for g in range(GROUPS) for p in credited(a, g)} == mine
    # the owner of the other groups finds the rest in the ledger on its next poll, once
    assert b.poll() == {a.group_of(p.account) for p in payments if p.payment_id not in mine}
    theirs = {p for g in range(GROUPS) for p in credited(b, g)}
    assert theirs == {p.payment_id for p in payments} - mine
    assert b.poll() == set()  # in flight now: not queued twice


def test_a_group_taken_over_brings_its_pending_payments_and_the_old_owner_forgets_them(
    tmp_path: Path,
) -> None:
    a, b = desks(tmp_path)
    a.set_owned(frozenset(range(GROUPS)))
    a.receive_many([[pay(i) for i in range(30)]], T0)
    group = a.group_of(pay(0).account)
    in_flight = credited(a, group)
    assert in_flight
    a.set_owned(frozenset(set(range(GROUPS)) - {group}))  # its node lost the lease
    assert a.batches(group) == [] and a.in_flight[group] == {}
    assert b.set_owned(frozenset({group})) == {group}
    assert sorted(credited(b, group)) == sorted(in_flight)


def test_an_acknowledged_payment_is_not_found_pending_again(tmp_path: Path) -> None:
    a, _ = desks(tmp_path)
    a.set_owned(frozenset(range(GROUPS)))
    a.receive_many([[pay(1)]], T0)
    group = a.group_of(pay(1).account)
    (batch,) = a.batches(group)
    ack = AckPayment(payment_id="p1", account=pay(1).account, outcome=PaymentOutcome.APPLIED)
    a.settle([(group, batch.batch_id, [ack])])
    assert a.poll() == set()  # settled, its ledger mark not yet written: still known
    a.record_acks(T0)
    assert a.poll() == set()


def test_a_single_node_desk_owns_every_group_and_never_polls(tmp_path: Path) -> None:
    desk = DeskService(store=MemoryBackend().open_desk_store(tmp_path), groups=GROUPS)
    assert all(desk.owns(g) for g in range(GROUPS))
    desk.receive_many([[pay(i) for i in range(8)]], T0)
    assert desk.poll() == set()
    assert sum(len(credited(desk, g)) for g in range(GROUPS)) == 8
