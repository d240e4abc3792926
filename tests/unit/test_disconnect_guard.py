"""The mass-disconnect guard's rules (domain/guard.py), case by case."""

from __future__ import annotations

import pytest

from domain.enums import CommandOrigin, RelayAction
from domain.guard import (
    QUEUED,
    ApprovalKind,
    GuardPolicy,
    GuardPolicyError,
    GuardState,
    Incoming,
    WaveStatus,
    admit,
    approval,
    cancel,
    tick,
)

POLICY = GuardPolicy(wave_size=10, wave_spacing_s=60.0, max_per_hour=25, max_per_hour_total=1000,
                     approvals_required=1)


def cut(i: int) -> Incoming:
    return Incoming(f"A{i:04d}", f"A{i:04d}:c1", 0, RelayAction.DISCONNECT, CommandOrigin.AUTOMATIC)


def connect(i: int) -> Incoming:
    return Incoming(f"B{i:04d}", f"B{i:04d}:c1", 0, RelayAction.CONNECT, CommandOrigin.AUTOMATIC)


def bill_run(n: int, policy: GuardPolicy = POLICY) -> tuple[GuardState, list[int], float]:
    """n automatic disconnects at once, then ticks a minute apart until nothing more leaves unheld."""
    s, acts = admit(GuardState(head_end="hes-1"), [cut(i) for i in range(n)], 0.0, 0, policy)
    left = [len(acts.send)]
    now = 0.0
    for _ in range(10):
        now += 60.0
        s, acts = tick(s, now, sum(left), policy, paused=False)
        left.append(len(acts.released))
    return s, left, now


def test_a_small_run_leaves_in_waves_of_wave_size_each_spacing() -> None:
    s, left, _ = bill_run(24)
    assert left[:4] == [10, 10, 4, 0]
    assert s.wave is None and not s.queue


def test_a_bill_run_past_the_hourly_threshold_is_held_whole_until_approved() -> None:
    s, left, now = bill_run(100)
    assert sum(left) == 20  # two waves of 10; the third would make 30 > 25 in the hour
    assert s.wave is not None and s.wave.status is WaveStatus.HELD and len(s.wave.members) == 80
    assert "max_per_hour 25" in s.wave.reason
    s, acts = tick(s, now + 60, 20, POLICY, paused=False, approvers=("asha",))
    assert s.wave is not None and s.wave.status is WaveStatus.APPROVED
    assert len(acts.released) == 10  # approved: still staggered, a wave_size per step
    released = len(acts.released)
    for k in range(1, 20):
        s, acts = tick(s, now + 60 + 60 * k, 0, POLICY, paused=False, approvers=("asha",))
        released += len(acts.released)
    assert released == 80 and s.wave is None


def test_a_held_wave_takes_in_what_queues_behind_it_and_reconnections_pass() -> None:
    s, _, now = bill_run(100)
    s, acts = admit(s, [cut(500), connect(1), cut(501)], now, 20, POLICY)
    assert acts.send == [1]
    assert [w for _, w in acts.kept] == [s.wave.wave_id, s.wave.wave_id] if s.wave else False
    assert s.wave is not None and len(s.wave.members) == 82 and s.wave.size == 82


def test_two_approvals_must_be_two_distinct_people() -> None:
    policy = GuardPolicy(wave_size=10, wave_spacing_s=60.0, max_per_hour=15, approvals_required=2)
    s, _, now = bill_run(40, policy)
    assert s.wave is not None and s.wave.status is WaveStatus.HELD
    first = approval(s.wave.status, (), "asha", 2)
    assert first.kind is ApprovalKind.RECORDED
    assert approval(s.wave.status, ("asha",), "asha", 2).kind is ApprovalKind.DUPLICATE
    s, acts = tick(s, now + 60, 0, policy, paused=False, approvers=("asha", "asha"))
    assert not acts.released and s.wave is not None and s.wave.status is WaveStatus.HELD
    assert approval(s.wave.status, ("asha",), "ravi", 2).kind is ApprovalKind.APPROVED
    s, acts = tick(s, now + 120, 0, policy, paused=False, approvers=("asha", "ravi"))
    assert len(acts.released) == 10
    assert approval(WaveStatus.APPROVED, ("asha", "ravi"), "meera", 2).kind is ApprovalKind.NOT_HELD


def test_pause_stops_the_next_step_and_resume_restarts_it() -> None:
    s, acts = admit(GuardState(head_end="hes-1"), [cut(i) for i in range(20)], 0.0, 0, POLICY)
    assert len(acts.send) == 10
    s, acts = tick(s, 60.0, 10, POLICY, paused=True)
    assert not acts.released and s.paused
    s, acts = admit(s, [cut(100), connect(1)], 61.0, 10, POLICY)
    assert acts.send == [1] and acts.kept[0][1] == QUEUED  # reconnections pass during a pause
    s, acts = tick(s, 62.0, 10, POLICY, paused=False)
    assert len(acts.released) == 10  # resumed: the step that was due leaves on the first tick


def test_a_cancelled_disconnect_leaves_the_queue_and_the_wave() -> None:
    s, _, now = bill_run(100)
    assert s.wave is not None
    member = s.wave.members[0]
    s, wave = cancel(s, member.account, member.command_id, now)
    assert wave is not None and wave.cancelled == 1 and len(wave.members) == 79
    assert s.wave is not None and member.account not in {k.account for k in s.wave.members}
    s, wave = cancel(s, member.account, member.command_id, now)
    assert wave is None  # unknown now: nothing changes


def test_a_released_meter_s_fresh_command_passes_at_once() -> None:
    s, acts = admit(GuardState(head_end="hes-1"), [cut(i) for i in range(12)], 0.0, 0, POLICY)
    s, acts = tick(s, 60.0, 10, POLICY, paused=False)
    assert [k.account for k in acts.released] == ["A0010", "A0011"]
    fresh = Incoming("A0010", "A0010:c2", 0, RelayAction.DISCONNECT, CommandOrigin.AUTOMATIC)
    s, acts = admit(s, [fresh], 61.0, 12, POLICY)
    assert acts.send == [0] and acts.counted == 0  # counted once, when it was released


def test_the_node_wide_total_holds_a_wave_too() -> None:
    policy = GuardPolicy(wave_size=10, wave_spacing_s=60.0, max_per_hour=1000, max_per_hour_total=30)
    s, acts = admit(GuardState(head_end="hes-2"), [cut(i) for i in range(20)], 0.0, 25, policy)
    assert len(acts.send) == 5  # 25 left other head-ends in the hour: 5 more reach the total of 30
    s, acts = tick(s, 60.0, 30, policy, paused=False)
    assert s.wave is not None and "max_per_hour_total 30" in s.wave.reason


def test_engineer_disconnections_and_a_disabled_guard_pass() -> None:
    eng = Incoming("E1", "E1:c1", 0, RelayAction.DISCONNECT, CommandOrigin.ENGINEER)
    _, acts = admit(GuardState(head_end="hes-1", paused=True), [eng], 0.0, 0, POLICY)
    assert acts.send == [0]
    off = GuardPolicy(enabled=False)
    _, acts = admit(GuardState(head_end="hes-1", paused=True), [cut(1)], 0.0, 10**9, off)
    assert acts.send == [0]


@pytest.mark.parametrize(("key", "value"), [("wave_size", 0), ("approvals_required", 3),
                                            ("max_per_hour", 0), ("wave_spacing_s", -1.0)])
def test_a_bad_setting_is_refused_naming_it(key: str, value: object) -> None:
    with pytest.raises(GuardPolicyError, match=f"disconnects.{key}"):
        GuardPolicy(**{key: value})  # type: ignore[arg-type]
