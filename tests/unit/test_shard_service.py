"""ShardService: decide → journal → assign → route, and recovery from the journal and snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import shard_snapshot
from actors.shard_service import NOTICES_KIND, ShardService
from domain.commands import ClearPayment, PostBill, RegisterMeter, ReportRelayResult
from domain.effects import AckPayment, NotifyConsumer, SendRelayCommand
from domain.enums import (
    ControlState,
    NoticeTemplate,
    PaymentOutcome,
    RelayAction,
    RelayResultStatus,
    RelayState,
)
from domain.events import RelayCommandIssued
from domain.fused import expand
from domain.policy import Policy, load_policy
from domain.shard import MeterHost, Packing
from domain.sharding import group_of, logical_shard
from domain.state import Meter
from protocols import codec
from protocols.registry import METER_PACKING
from storage.api import StoreOptions
from storage.records import NewOutboxEntry, OutboxStatus, Snapshot
from storage.sqlite import open_shard_store
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 3, 2, 11)
GROUPS = 1


def service(data: Path, group: int = 0) -> ShardService:
    store = open_shard_store(data, group, StoreOptions(synchronous="normal"))
    s = ShardService(group=group, groups=GROUPS, shards=256, store=store, policy=POLICY, snapshot_every=50)
    s.recover(T0)
    return s


def registrations(
    n: int, relay: RelayState = RelayState.DISCONNECTED, dues: int = 150_000
) -> list[RegisterMeter]:
    return [
        RegisterMeter(
            account=f"N{i:010d}", serial=f"S{i}", head_end="hes-1", install_year=2022, relay_capable=True,
            control_mode=2, relay=relay, opening_dues_paise=dues,
        )
        for i in range(n)
    ]


def pay(i: int, amount: int = 150_000, pid: str | None = None) -> ClearPayment:
    return ClearPayment(account=f"N{i:010d}", payment_id=pid or f"P{i}", amount_paise=amount, channel="upi",
                        cashless=True, paid_at=T0)


def test_a_payment_is_journaled_acknowledged_and_sends_one_connect(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(3), T0)
    out = s.apply([pay(1)], T0 + 5)
    assert out.acks == [AckPayment(payment_id="P1", account="N0000000001", outcome=PaymentOutcome.APPLIED)]
    sent = out.relay["hes-1"]
    assert len(sent) == 1 and isinstance(sent[0], SendRelayCommand) and sent[0].action is RelayAction.CONNECT
    audit = s.store.events_for_ref(logical_shard("N0000000001"), sent[0].command_id)
    # the journal is the command's audit trail: the payment and its command are ONE record (issue 13)
    assert [e.kind for e in audit] == ["PaymentReconnect"]
    parts = expand(codec.decode(audit[0].body))
    assert [type(e).__name__ for e in parts] == ["PaymentApplied", "RelayTargetSet", "RelayCommandIssued"]
    assert isinstance(parts[-1], RelayCommandIssued) and parts[-1].command_id == sent[0].command_id
    kinds = [e.kind for e in s.store.events_for_account(logical_shard("N0000000001"), "N0000000001")]
    assert kinds == ["PaymentReconnect", "MeterRegistered"]  # newest first


def test_redelivered_payment_is_acknowledged_and_credits_nothing(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(1), T0)
    s.apply([pay(0, 50_000)], T0 + 1)
    heads = dict(s.heads)
    out = s.apply([pay(0, 50_000)], T0 + 2)
    assert [a.outcome for a in out.acks] == [PaymentOutcome.APPLIED]
    assert s.heads == heads and not out.relay


def test_recovery_rebuilds_state_and_the_commands_in_flight(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(120), T0)  # > snapshot_every events in most shards? snapshot some
    s.snapshot(s.snapshot_due() or list(s.heads), T0)
    out = s.apply([pay(i) for i in range(0, 120, 2)], T0 + 10)
    in_flight = {c.command_id for cmds in out.relay.values() for c in cmds}
    before = {m.account: m for m in s.host.meters()}
    s.store.close()

    again = service(tmp_path)
    assert {m.account: m for m in again.host.meters()} == before
    assert {c.command_id for c in again.in_flight()} == in_flight
    assert again.host.relay_counts[RelayState.CONNECTING] == 60


def test_relay_result_connects_and_is_audited_under_the_command_id(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(1), T0)
    s.note_payments([("P0", 1000.0)])
    command = s.apply([pay(0)], T0 + 1).relay["hes-1"][0]
    s.mark_sent([command])
    result = ReportRelayResult(account="N0000000000", command_id=command.command_id,
                               status=RelayResultStatus.PROCESSED, control_state=ControlState.CONNECTED,
                               output_state=True)
    out = s.apply([result], T0 + 3)
    m = s.host.get("N0000000000")
    assert m is not None and m.relay is RelayState.CONNECTED
    audit = s.store.events_for_ref(logical_shard("N0000000000"), command.command_id)
    assert [e.kind for e in audit][-1] == "RelayStateConfirmed"
    assert [h for h, _ in out.reconnected] == ["hes-1"]
    assert command.command_id not in s.sent_at


def test_unanswered_commands_are_sent_again_after_the_resend_delay(tmp_path: Path) -> None:
    clock = [1000.0]
    store = open_shard_store(tmp_path, 0, StoreOptions(synchronous="normal"))
    s = ShardService(group=0, groups=1, shards=256, store=store, policy=POLICY, wall=lambda: clock[0])
    s.recover(T0)
    s.apply(registrations(1), T0)
    command = s.apply([pay(0)], T0).relay["hes-1"][0]
    s.mark_sent([command])
    assert not s.tick(T0 + 1, limit=100, resend_after=30).relay
    clock[0] += 31
    again = s.tick(T0 + 2, limit=100, resend_after=30).relay["hes-1"]
    assert [c.command_id for c in again] == [command.command_id]


def test_an_unanswered_credit_update_is_sent_again_unchanged_after_the_resend_delay(tmp_path: Path) -> None:
    """A prepaid meter that keeps its own credit (domain/credit.py): a lost update (a gateway restarted)
    goes again with the same id and attempt, so the head-end applies it once; once answered, never again."""
    from domain.commands import SetBillingMode
    from domain.enums import BillingMode, RelayAction

    clock = [1000.0]
    store = open_shard_store(tmp_path, 0, StoreOptions(synchronous="normal"))
    policy = load_policy('[prepaid]\nmeter_credit_head_ends = ["hes-1"]\n')
    s = ShardService(group=0, groups=1, shards=256, store=store, policy=policy, wall=lambda: clock[0])
    s.recover(T0)
    s.apply(registrations(1, relay=RelayState.CONNECTED, dues=0), T0)
    account = registrations(1)[0].account
    out = s.apply([SetBillingMode(account=account, mode=BillingMode.PREPAID, opening_balance_paise=5_000,
                                  request_id="bm")], T0)
    [update] = out.relay["hes-1"]
    assert (update.action, update.balance_paise) == (RelayAction.CREDIT, 5_000)
    s.mark_sent([update])
    clock[0] += 31
    [again] = s.tick(T0 + 2, limit=100, resend_after=30).relay["hes-1"]
    assert (again.command_id, again.attempt, again.balance_paise) == (update.command_id, 1, 5_000)
    s.mark_sent([again])
    s.apply([ReportRelayResult(account=account, command_id=update.command_id,
                               status=RelayResultStatus.PROCESSED)], T0 + 3)
    clock[0] += 31
    assert not s.tick(T0 + 4, limit=100, resend_after=30).relay
    assert update.command_id not in s.sent_at


def test_a_bill_for_an_unknown_account_is_refused_without_sinking_the_batch(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(1, relay=RelayState.CONNECTED, dues=0), T0)
    bills = [
        PostBill(account="NOPE", bill_id="B1", amount_paise=100, due_date="2026-03-20", issued_at=T0),
        PostBill(account="N0000000000", bill_id="B2", amount_paise=100, due_date="2026-03-20", issued_at=T0),
    ]
    s.apply(bills, T0)
    m = s.host.get("N0000000000")
    assert m is not None and m.dues_paise == 100


@pytest.mark.parametrize("groups", [2, 3])
def test_group_hosts_only_its_logical_shards(tmp_path: Path, groups: int) -> None:
    store = open_shard_store(tmp_path, 1, StoreOptions(synchronous="normal"))
    s = ShardService(group=1, groups=groups, shards=256, store=store, policy=POLICY)
    assert all(group_of(x, groups) == 1 for x in s.shards)


def test_a_bill_for_an_unknown_account_is_reported_as_refused(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(1, relay=RelayState.CONNECTED, dues=0), T0)
    bills = [
        PostBill(account="N0000000000", bill_id="B2", amount_paise=100, due_date="2026-03-20", issued_at=T0),
        PostBill(account="NOPE", bill_id="B1", amount_paise=100, due_date="2026-03-20", issued_at=T0),
    ]
    out = s.apply(bills, T0)
    assert [i for i, _ in out.rejected] == [1] and "NOPE" in out.rejected[0][1]


# ------------------------------------------------------------ snapshots of the packed resident form


def counting_host(s: ShardService, policy: Policy = POLICY) -> list[int]:
    """Give a fresh service a host that counts the meters it unpacks (the service's own packing)."""
    unpacked = [0]

    def unpack(account: str, value: object) -> Meter:
        unpacked[0] += 1
        return METER_PACKING.unpack(account, value)

    s.host = MeterHost(policy, 256, Packing(pack=METER_PACKING.pack, unpack=unpack))
    return unpacked


def fresh(data: Path, policy: Policy = POLICY) -> tuple[ShardService, list[int]]:
    store = open_shard_store(data, 0, StoreOptions(synchronous="normal"))
    s = ShardService(group=0, groups=GROUPS, shards=256, store=store, policy=policy, snapshot_every=50)
    return s, counting_host(s, policy)


def state(s: ShardService) -> tuple[object, ...]:
    return (
        {m.account: m for m in s.host.meters()},
        {k: v for k, v in s.host.relay_counts.items() if v},
        set(s.host.paid_off),
        set(s.host.pending),
        sorted(c.command_id for c in s.in_flight()),
    )


def test_recovery_from_snapshots_unpacks_only_the_meters_the_tail_touched(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(200), T0)
    s.apply([pay(i) for i in range(0, 200, 4)], T0 + 5)  # 50 connects in flight
    s.snapshot(list(s.heads), T0 + 6)
    s.apply([pay(i) for i in range(1, 200, 20)], T0 + 10)  # the tail: 10 more
    before = state(s)
    s.store.close()

    again, unpacked = fresh(tmp_path)
    again.recover(T0 + 20, receipt_of=lambda payment_id: 1000.0)
    assert unpacked[0] == 10 + 60  # the tail's meters, then the pending ones to follow their latency
    assert set(again.recovery_stages) == {"snapshots", "tail", "timers", "follow"}
    assert len(again.command_payment) == 60
    assert state(again) == before


def test_a_snapshot_saves_every_meter_without_unpacking_one(tmp_path: Path) -> None:
    s, unpacked = fresh(tmp_path)
    s.recover(T0)
    s.apply(registrations(100), T0)
    s.apply([pay(i) for i in range(10)], T0 + 5)
    unpacked[0] = 0
    assert s.snapshot(list(s.heads), T0 + 6) == 100
    assert unpacked[0] == 0


def test_a_v1_snapshot_still_loads_and_is_saved_again_as_v2(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(120), T0)
    s.apply([pay(i) for i in range(0, 120, 3)], T0 + 5)
    shards = sorted(s.heads)
    s.store.save_snapshots([  # what jodo wrote before meters were resident packed
        Snapshot(shard=shard, upto_seq=s.heads[shard], at=T0 + 6,
                 body=codec.encode_many(s.host.shard_meters(shard)))
        for shard in shards
    ])
    s.apply([pay(i) for i in range(1, 120, 3)], T0 + 10)
    before = state(s)
    s.store.close()

    again = service(tmp_path)
    assert state(again) == before
    assert sorted(again.snapshot_due()) == shards  # each written again in the new form soon
    again.snapshot(again.snapshot_due(), T0 + 20)
    rules = shard_snapshot.rules_fingerprint(POLICY)
    for x in shards:
        saved = again.store.latest_snapshot(x)
        assert saved is not None and not isinstance(shard_snapshot.load(saved.body, x, rules), list)
    again.store.close()
    third = service(tmp_path)
    assert state(third) == before


def test_snapshots_taken_under_another_policy_are_recounted(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(40), T0)
    s.apply([pay(i, amount=110_000) for i in range(40)], T0 + 5)  # 40 000 paise still owed: still off
    s.snapshot(list(s.heads), T0 + 6)
    assert not s.host.paid_off
    s.store.close()

    lenient = load_policy("[reconnection]\nthreshold_paise = 45000\n")
    again, _ = fresh(tmp_path, lenient)
    again.recover(T0 + 20)
    assert len(again.host.paid_off) == 40  # every meter counted again under the policy in force
    assert sorted(again.snapshot_due()) == sorted(s.heads)


def test_the_commands_in_flight_after_a_recovery_follow_later_batches(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(10), T0)
    s.apply([pay(0)], T0 + 5)
    s.store.close()
    again = service(tmp_path)
    assert [c.account for c in again.in_flight()] == ["N0000000000"]  # found while recovering
    again.apply([pay(1)], T0 + 10)
    assert sorted(c.account for c in again.in_flight()) == ["N0000000000", "N0000000001"]


def test_the_notices_of_one_commit_are_one_outbox_row_done_once_all_are_delivered(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(4), T0)
    out = s.apply([pay(i) for i in range(4)], T0 + 1)
    assert len(out.notices) >= 4
    [row] = [e for e in s.store.open_outbox() if e.kind == NOTICES_KIND]
    assert codec.decode_many(row.body) == out.notices
    s.notices_sent([n.notice_id for n in out.notices[:-1]])
    s.apply([pay(0)], T0 + 2)  # (redelivered: no new notice) nothing to mark yet, one is still out
    assert [e.id for e in s.store.open_outbox() if e.kind == NOTICES_KIND] == [row.id]
    s.notices_sent([out.notices[-1].notice_id, out.notices[-1].notice_id, "never-seen"])
    s.apply([pay(1)], T0 + 3)  # the next commit marks it
    assert s.store.outbox_entry(row.id).status is OutboxStatus.DONE  # type: ignore[union-attr]


def test_notices_not_delivered_before_a_crash_are_delivered_after_it(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(3), T0)
    out = s.apply([pay(i) for i in range(3)], T0 + 1)
    s.notices_sent([out.notices[0].notice_id])  # one delivered, but the process dies before a commit
    s.store.close()

    again = service(tmp_path)
    resent = again.open_notices()
    assert resent == out.notices  # at-least-once: the whole row again
    again.notices_sent(n.notice_id for n in resent)
    again.apply([pay(0)], T0 + 2)
    assert [e for e in again.store.open_outbox() if e.kind in (NOTICES_KIND, "notice")] == []


def test_one_notice_rows_of_an_older_data_directory_are_delivered_and_marked_done(tmp_path: Path) -> None:
    s = service(tmp_path)
    s.apply(registrations(1), T0)
    old = NotifyConsumer(notice_id="N0000000000:old", account="N0000000000",
                         template=NoticeTemplate.PAYMENT_RECEIVED, amount_paise=100)
    row = NewOutboxEntry(id=old.notice_id, shard=logical_shard(old.account), kind="notice",
                         account=old.account, at=T0, body=codec.encode(old))
    s.store.commit([], outbox=[row])
    s.store.close()

    again = service(tmp_path)
    assert again.open_notices() == [old]
    again.notices_sent([old.notice_id])
    again.apply([pay(0)], T0 + 1)
    assert again.store.outbox_entry(old.notice_id).status is OutboxStatus.DONE  # type: ignore[union-attr]
