"""The meter host: many entities, computed then assigned, with one timer index."""

from __future__ import annotations

from domain.commands import ClearPayment, PostBill, RegisterMeter
from domain.effects import AckPayment, SendRelayCommand
from domain.enums import PaymentOutcome, RelayAction, RelayState
from domain.policy import load_policy
from domain.shard import MeterHost, Packing
from domain.sharding import logical_shard
from domain.state import Meter
from protocols.registry import METER_PACKING
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 1, 5, 10)


def register(n: int) -> list[RegisterMeter]:
    return [
        RegisterMeter(
            account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022,
            relay_capable=True, control_mode=2,
        )
        for i in range(n)
    ]


def hosted(n: int) -> MeterHost:
    host = MeterHost(POLICY)
    host.assign(host.step(register(n), T0), T0)
    return host


def test_step_changes_nothing_until_assigned() -> None:
    host = MeterHost(POLICY)
    step = host.step(register(3), T0)
    assert len(host) == 0 and len(step.states) == 3
    host.assign(step, T0)
    assert len(host) == 3 and host.relay_counts[RelayState.CONNECTED] == 3


def test_events_are_tagged_with_the_meters_logical_shard() -> None:
    step = MeterHost(POLICY).step(register(5), T0)
    assert all(shard == logical_shard(e.account) for shard, e in step.events)


def test_commands_for_one_meter_in_a_batch_apply_in_order() -> None:
    host = hosted(1)
    bill = PostBill(account="N0000000000", bill_id="B1", amount_paise=50_000, due_date="2026-01-20",
                    issued_at=T0)
    pay = ClearPayment(account="N0000000000", payment_id="P1", amount_paise=50_000, channel="upi",
                       cashless=True, paid_at=T0)
    step = host.step([bill, pay], T0)
    host.assign(step, T0)
    m = host.get("N0000000000")
    assert m is not None and m.dues_paise <= 0


def test_a_bad_command_is_rejected_alone_and_the_rest_stands() -> None:
    host = hosted(2)
    bad = PostBill.__new__(PostBill)  # bypasses validation: a record that makes decide raise
    object.__setattr__(bad, "account", "N0000000001")
    pay = ClearPayment(account="N0000000000", payment_id="P1", amount_paise=100, channel="upi",
                       cashless=True, paid_at=T0)
    step = host.step([bad, pay], T0)
    assert len(step.failures) == 1 and step.failures[0][0] is bad
    assert AckPayment(payment_id="P1", account="N0000000000", outcome=PaymentOutcome.APPLIED) in step.effects


def test_unknown_account_payment_is_acknowledged_as_unknown() -> None:
    host = hosted(1)
    pay = ClearPayment(account="X1", payment_id="P9", amount_paise=100, channel="upi", cashless=True,
                       paid_at=T0)
    step = host.step([pay], T0)
    unknown = AckPayment(payment_id="P9", account="X1", outcome=PaymentOutcome.UNKNOWN_ACCOUNT)
    assert step.effects == (unknown,)
    assert not step.events


def test_overdue_meters_come_due_once_each_and_disconnect_after_notice() -> None:
    host = hosted(50)
    bills = [
        PostBill(account=f"N{i:010d}", bill_id=f"B{i}", amount_paise=200_000, due_date="2026-01-06",
                 issued_at=T0)
        for i in range(50)
    ]
    host.assign(host.step(bills, T0), T0)
    assert host.next_due() is not None
    now = T0
    sent: list[SendRelayCommand] = []
    for _ in range(400):  # walk the clock from timer to timer, as the shard's tick does
        nxt = host.next_due()
        if nxt is None or nxt > at(2026, 2, 28):
            break
        now = max(now, nxt)
        checks = host.due(now, limit=20)
        assert len({c.account for c in checks}) == len(checks)
        step = host.step(checks, now)
        host.assign(step, now)
        sent += [e for e in step.effects if isinstance(e, SendRelayCommand)]
        if len(sent) >= 50:
            break
    assert {s.account for s in sent} == {f"N{i:010d}" for i in range(50)}
    assert all(s.action is RelayAction.DISCONNECT for s in sent)
    assert host.relay_counts[RelayState.DISCONNECTING] == 50


# ------------------------------------------------------------ the packed resident form


class CountingPacking:
    """METER_PACKING, counting what is unpacked and packed."""

    def __init__(self) -> None:
        self.unpacked = 0
        self.packed = 0

    def packing(self) -> Packing:
        def pack(m: Meter) -> object:
            self.packed += 1
            return METER_PACKING.pack(m)

        def unpack(account: str, value: object) -> Meter:
            self.unpacked += 1
            return METER_PACKING.unpack(account, value)

        return Packing(pack=pack, unpack=unpack)


def billed_and_paid(host: MeterHost, n: int) -> None:
    """n meters, the odd ones disconnected and owing: the even ones billed (a check at the due date),
    every third one paying what it owes (the odd ones of those: a connect pending, paid up yet off)."""
    host.assign(host.step([
        RegisterMeter(account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022,
                      relay_capable=True, control_mode=2,
                      relay=RelayState.DISCONNECTED if i % 2 else RelayState.CONNECTED,
                      opening_dues_paise=100_000 if i % 2 else 0)
        for i in range(n)
    ], T0), T0)
    bills = [PostBill(account=f"N{i:010d}", bill_id=f"B{i}", amount_paise=200_000, due_date="2026-01-06",
                      issued_at=T0) for i in range(0, n, 2)]
    host.assign(host.step(bills, T0), T0)
    pays = [ClearPayment(account=f"N{i:010d}", payment_id=f"P{i}", amount_paise=200_000 if i % 2 == 0
                         else 100_000, channel="upi", cashless=True, paid_at=T0) for i in range(0, n, 3)]
    host.assign(host.step(pays, T0), T0)
    assert host.pending and host.paid_off


def test_a_packing_host_keeps_bytes_and_decides_like_one_keeping_objects() -> None:
    objects, packed = MeterHost(POLICY), MeterHost(POLICY, packing=METER_PACKING)
    billed_and_paid(objects, 40)
    billed_and_paid(packed, 40)
    assert list(packed.meters()) and sorted(objects.meters(), key=str) == sorted(packed.meters(), key=str)
    image = packed.image(logical_shard("N0000000000"))
    assert all(isinstance(v, bytes) and len(v) < 120 for v in image.meters.values())
    assert packed.relay_counts == objects.relay_counts and packed.next_due() == objects.next_due()
    later = at(2026, 1, 7, 10)
    assert sorted(packed.due(later, 100), key=str) == sorted(objects.due(later, 100), key=str)


def test_assign_after_step_unpacks_each_meter_once_and_packs_it_once() -> None:
    counting = CountingPacking()
    host = MeterHost(POLICY, packing=counting.packing())
    host.assign(host.step(register(10), T0), T0)
    counting.unpacked = counting.packed = 0
    bills = [PostBill(account=f"N{i:010d}", bill_id=f"B{i}", amount_paise=100, due_date="2026-01-20",
                      issued_at=T0) for i in range(10)]
    host.assign(host.step(bills, T0), T0)
    assert (counting.unpacked, counting.packed) == (10, 10)


def test_an_image_loads_with_its_counts_and_timers_unpacking_no_meter() -> None:
    source = MeterHost(POLICY, packing=METER_PACKING)
    billed_and_paid(source, 60)
    counting = CountingPacking()
    host = MeterHost(POLICY, packing=counting.packing())
    for shard in {logical_shard(f"N{i:010d}") for i in range(60)}:
        host.load(source.image(shard))
    host.rebuild_timers(T0)
    later = at(2026, 1, 7, 10)
    checks = host.due(later, 100)
    split = host.paid_but_disconnected_since(later, 60)
    assert counting.unpacked == 0
    assert len(host) == 60 and host.relay_counts == source.relay_counts
    assert set(host.paid_off) == set(source.paid_off) and host.pending == source.pending
    source.rebuild_timers(T0)
    assert sorted(checks, key=str) == sorted(source.due(later, 100), key=str) and checks
    assert split == source.paid_but_disconnected_since(later, 60)


def test_a_replayed_tail_unpacks_and_packs_each_meter_it_touches_once() -> None:
    source = MeterHost(POLICY, packing=METER_PACKING)
    billed_and_paid(source, 30)
    images = [source.image(s) for s in {logical_shard(f"N{i:010d}") for i in range(30)}]
    pays = [ClearPayment(account=f"N{i:010d}", payment_id=f"Q{i}-{k}", amount_paise=1_000, channel="upi",
                         cashless=True, paid_at=T0) for i in range(5) for k in range(3)]
    step = source.step(pays, T0 + 60)
    source.assign(step, T0 + 60)
    counting = CountingPacking()
    host = MeterHost(POLICY, packing=counting.packing())
    for image in images:
        host.load(image)
    for _, event in step.events:
        host.replay(event)
    assert host.get("N0000000001") == source.get("N0000000001")  # replayed, not packed yet: as is
    host.rebuild_timers(T0 + 60)
    assert (counting.unpacked, counting.packed) == (5, 5)
    assert sorted(host.meters(), key=str) == sorted(source.meters(), key=str)
    assert host.relay_counts == source.relay_counts and set(host.paid_off) == set(source.paid_off)


def test_loading_a_shard_again_replaces_what_the_host_had_of_it() -> None:
    host = MeterHost(POLICY, packing=METER_PACKING)
    billed_and_paid(host, 20)
    shard = logical_shard("N0000000000")
    image = host.image(shard)
    before = (len(host), dict(host.relay_counts), set(host.paid_off), set(host.pending))
    host.load(image)
    assert (len(host), dict(host.relay_counts), set(host.paid_off), set(host.pending)) == before


def test_a_restore_of_meter_objects_counts_and_schedules_them() -> None:
    source = MeterHost(POLICY)
    billed_and_paid(source, 20)
    host = MeterHost(POLICY, packing=METER_PACKING)
    host.restore(source.meters())
    host.rebuild_timers(T0)
    source.rebuild_timers(T0)
    later = at(2026, 1, 7, 10)
    assert host.relay_counts == source.relay_counts
    assert sorted(host.due(later, 100), key=str) == sorted(source.due(later, 100), key=str)
