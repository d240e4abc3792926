"""A hypothesis state machine over the mass-disconnect guard of one head-end (domain/guard.py):
batches of relay commands (automatic and engineer disconnects, connects, reads, re-sends), ticks
with the clock moving, approvals (repeated names too), pause/resume and cancellations. After every
step it checks the guard's promises:

* **reconnections are never held or throttled**: every command that is not an automatic disconnect
  is sent at once, paused or not, wave held or not;
* every offered command is either sent or kept, once; a kept disconnect is never lost or doubled:
  it is in the queue or the open wave until it is released or cancelled;
* while paused nothing leaves; a step never lets out more than ``wave_size``;
* what leaves without approval never takes the last hour past ``max_per_hour`` (nor the node-wide
  total past ``max_per_hour_total``);
* a held wave releases nothing before ``approvals_required`` distinct approvers.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.enums import CommandOrigin, RelayAction
from domain.guard import (
    QUEUED,
    Actions,
    GuardPolicy,
    GuardState,
    Incoming,
    WaveStatus,
    admit,
    approval,
    cancel,
    recent_count,
    tick,
)

ACCOUNTS = [f"A{i:03d}" for i in range(40)]
KINDS = st.sampled_from([
    (RelayAction.DISCONNECT, CommandOrigin.AUTOMATIC),
    (RelayAction.DISCONNECT, CommandOrigin.AUTOMATIC),
    (RelayAction.DISCONNECT, CommandOrigin.AUTOMATIC),
    (RelayAction.DISCONNECT, CommandOrigin.ENGINEER),
    (RelayAction.CONNECT, CommandOrigin.AUTOMATIC),
    (RelayAction.CONNECT, CommandOrigin.ENGINEER),
    (RelayAction.READ, CommandOrigin.ENGINEER),
])
OTHERS = 7  # disconnections "left" the node's other head-ends in the window (node-wide total)


class GuardMachine(RuleBasedStateMachine):
    @initialize(size=st.integers(1, 6), spacing=st.sampled_from([0.0, 5.0, 30.0]),
                per_hour=st.integers(1, 25), approvals=st.sampled_from([1, 2]))
    def start(self, size: int, spacing: float, per_hour: int, approvals: int) -> None:
        self.policy = GuardPolicy(wave_size=size, wave_spacing_s=spacing, max_per_hour=per_hour,
                                  max_per_hour_total=per_hour + OTHERS + 5, approvals_required=approvals,
                                  window_s=600.0, cleared_ttl_s=120.0)
        self.state = GuardState(head_end="hes-1")
        self.now = 1_000.0
        self.paused = False
        self.seq = 0
        self.kept: dict[str, str] = {}  # account → command id the guard keeps (model)
        self.approved_ids: set[str] = set()
        self.unapproved_left: list[tuple[float, int]] = []

    def _total(self) -> int:
        return OTHERS + recent_count(self.state, self.now, self.policy)

    def _check_leaving(self, acts: Actions, *, approved_release: bool) -> None:
        assert self.state.step_used <= self.policy.wave_size
        if acts.counted and not approved_release:
            here = recent_count(self.state, self.now, self.policy)
            assert here <= self.policy.max_per_hour
            assert OTHERS + here <= self.policy.max_per_hour_total

    @rule(batch=st.lists(st.tuples(st.sampled_from(ACCOUNTS), KINDS, st.booleans()), min_size=1, max_size=8))
    def offer(self, batch: list[tuple[str, tuple[RelayAction, CommandOrigin], bool]]) -> None:
        items = []
        for account, (action, origin), resend in batch:
            if resend and account in self.kept:
                command_id = self.kept[account]  # the shard sends the kept command again
            else:
                self.seq += 1
                command_id = f"{account}:c{self.seq}"
            items.append(Incoming(account, command_id, 0, action, origin))
        before = self.state
        self.state, acts = admit(self.state, items, self.now, OTHERS + recent_count(before, self.now,
                                                                                    self.policy), self.policy)
        kept_idx = {(k.account, k.command_id) for k, _ in acts.kept}
        assert len(acts.send) + len(acts.kept) == len(items)
        for i, item in enumerate(items):
            automatic_disconnect = (item.action is RelayAction.DISCONNECT
                                    and item.origin is CommandOrigin.AUTOMATIC)
            if not automatic_disconnect:
                assert i in acts.send, "a reconnection, read or engineer's command was held"
            elif i in acts.send:
                assert not before.paused or before.cleared.get(item.account, 0) > self.now
                self.kept.pop(item.account, None)
            else:
                assert (item.account, item.command_id) in kept_idx
                self.kept[item.account] = item.command_id
        if acts.counted:
            assert not before.paused
            self.unapproved_left.append((self.now, acts.counted))
        self._check_leaving(acts, approved_release=False)

    @rule(dt=st.sampled_from([0.0, 1.0, 5.0, 31.0, 200.0, 700.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        before = self.state
        wave = before.wave
        approvers = tuple(sorted(self.approved_ids))
        self.state, acts = tick(self.state, self.now, OTHERS + recent_count(before, self.now, self.policy),
                                self.policy, paused=self.paused, approvers=approvers)
        if self.paused:
            assert not acts.released and acts.counted == 0
        members = {k.account for k in wave.members} if wave is not None else set()
        from_wave = bool(acts.released) and all(k.account in members for k in acts.released)
        enough = len(set(approvers)) >= self.policy.approvals_required
        if wave is not None and wave.status is WaveStatus.HELD and not enough:
            assert not from_wave, "a held wave released before enough distinct approvers"
        for k in acts.released:
            assert self.kept.pop(k.account) == k.command_id
        if not from_wave and acts.counted:
            self.unapproved_left.append((self.now, acts.counted))
        self._check_leaving(acts, approved_release=from_wave)
        if self.state.wave is None or self.state.wave.wave_id != (wave.wave_id if wave else None):
            self.approved_ids = set()

    @rule(name=st.sampled_from(["asha", "ravi", "asha"]))
    def approve(self, name: str) -> None:
        wave = self.state.wave
        if wave is None:
            return
        have = tuple(sorted(self.approved_ids))
        outcome = approval(wave.status, have, name, self.policy.approvals_required)
        if name in self.approved_ids:
            assert str(outcome.kind) in ("duplicate", "not_held")
        if str(outcome.kind) in ("approved", "recorded"):
            self.approved_ids.add(name)

    @rule(paused=st.booleans())
    def switch(self, paused: bool) -> None:
        self.paused = paused

    @rule(account=st.sampled_from(ACCOUNTS))
    def cancel_one(self, account: str) -> None:
        command_id = self.kept.get(account)
        if command_id is None:
            return
        self.state, _ = cancel(self.state, account, command_id, self.now)
        del self.kept[account]

    @invariant()
    def kept_once(self) -> None:
        if not hasattr(self, "state"):
            return
        members = list(self.state.queue) + (list(self.state.wave.members) if self.state.wave else [])
        accounts = [k.account for k in members]
        assert len(accounts) == len(set(accounts)), "a disconnect kept twice"
        assert {k.account: k.command_id for k in members} == self.kept, "a kept disconnect was lost"
        wave = self.state.wave
        if wave is not None:
            assert wave.status in (WaveStatus.HELD, WaveStatus.APPROVED)
            assert wave.members, "an empty wave stays open"
            assert wave.left + wave.cancelled + len(wave.members) <= wave.size + wave.cancelled
        assert self.state.step_used <= self.policy.wave_size

    @invariant()
    def unapproved_within_the_hour(self) -> None:
        if not hasattr(self, "state"):
            return
        since = self.now - self.policy.window_s
        assert sum(n for at, n in self.unapproved_left if at > since) <= self.policy.max_per_hour


TestGuardMachine = GuardMachine.TestCase
TestGuardMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


def test_queued_is_not_a_wave_id() -> None:
    assert "." not in QUEUED
