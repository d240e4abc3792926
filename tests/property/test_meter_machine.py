"""A hypothesis state machine over one meter: bills, payments (duplicates, late deliveries), clock
advances and timer wake-ups, relay results (success, failure, expiry, button, stale), relay reads and
engineer overrides. After every step it checks the meter core's promises (STYLE §11):

* money is conserved: dues = opening + bills + surcharges + charges - payments - rebates, with bills
  and payments counted by the test itself;
* a payment id is credited at most once (redeliveries within the meter's recent-id window);
* an eligible meter with dues <= threshold is never left disconnected with nothing pending and no
  work order open (unless an engineer deliberately disconnected it);
* no automatic disconnect is issued inside a no-disconnection window or for a protected/held meter;
* replaying the journal from any snapshot (state after k events) gives the current state;
* after a decide that ran the standing rules, next_check_at is never before that decide's now.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.commands import (
    CheckMeter,
    ClearPayment,
    EngineerOverride,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportMeterState,
    ReportRelayResult,
)
from domain.effects import AckPayment, SendRelayCommand
from domain.enums import (
    CommandOrigin,
    ControlState,
    OverrideAction,
    PaymentOutcome,
    RelayAction,
    RelayResultStatus,
    RelayState,
    RelayTarget,
)
from domain.events import (
    MeterEvent,
    PaymentApplied,
    RebateGranted,
    ReconnectionChargeApplied,
    SurchargeApplied,
)
from domain.fused import expand_all, fuse_all
from domain.meter import apply_all, decide, handle, next_check_at
from domain.payment_path import handle_batched
from domain.policy import Policy, load_policy
from domain.rules import BUTTON_CONTROL_MODES, remote_switching_eligible
from domain.state import RECENT_PAYMENT_IDS_KEPT, Meter
from domain.windows import allowed_until, disconnection_allowed

IST = ZoneInfo("Asia/Kolkata")
ACCOUNT = "N100200300"
START = int(datetime(2025, 3, 1, 10, tzinfo=IST).timestamp())
POLICIES = {days: load_policy(f"[disconnection]\nnotice_clear_days = {days}\n") for days in (0, 1, 15)}

seconds = st.one_of(
    st.integers(1, 120),  # a result or a retry
    st.integers(600, 4 * 3600),  # expiries, hours of the day
    st.integers(86_400 // 2, 6 * 86_400),  # days: due dates, notices, weekends
)


class MeterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy: Policy = POLICIES[15]
        self.state: Meter | None = None
        self.now = START
        self.rules_now = START  # the now of the last decide that ran the standing rules
        self.journal: list[MeterEvent] = []
        self.snapshots: list[Meter | None] = [None]  # state after k journal events
        self.opening = 0
        self.bills_total = 0
        self.payments_total = 0
        self.bill_ids: list[str] = []
        self.bill_amounts: dict[str, int] = {}
        self.payment_ids: list[str] = []
        self.command_ids: list[str] = []
        self.credited: Counter[str] = Counter()
        self.last_effects: tuple[object, ...] = ()

    # ------------------------------------------------------------------ driving

    def step(self, command: MeterCommand) -> None:
        before = self.state
        events, effects = decide(before, command, self.now, self.policy)
        new_state, h_events, h_effects = handle(before, command, self.now, self.policy)
        assert (h_events, h_effects) == (events, effects), "decide is not deterministic"
        for event in events:
            self.snapshots.append(apply_all(self.snapshots[-1], (event,)))
        assert self.snapshots[-1] == new_state
        fused = fuse_all(events)  # as a shard journals them (issue 13): same events, same state
        assert expand_all(fused) == list(events)
        assert apply_all(before, fused) == new_state
        b_state, b_events, b_effects = handle_batched(before, command, self.now, self.policy)
        assert (b_state, expand_all(b_events), b_effects) == (new_state, list(events), effects)
        assert fuse_all(list(b_events)) == fused  # the journal gets the same records
        self.journal.extend(events)
        self.state = new_state
        self.last_effects = effects
        m = self.m
        if events or isinstance(command, CheckMeter):
            self.rules_now = self.now
            if isinstance(command, CheckMeter):
                wake = next_check_at(m, self.policy)
                assert wake is None or wake > self.now, "the timer would fire again at once"
        for event in events:
            if isinstance(event, PaymentApplied):
                self.credited[event.payment_id] += 1
        for effect in effects:
            if isinstance(effect, SendRelayCommand):
                self.command_ids.append(effect.command_id)
                if effect.action is RelayAction.DISCONNECT and effect.origin is CommandOrigin.AUTOMATIC:
                    assert disconnection_allowed(self.now, self.policy), "automatic cut inside a window"
                    assert effect.expires_at <= allowed_until(self.now, self.policy)
                    assert not m.protected and not m.on_hold, "automatic cut of an exempt meter"
        if isinstance(command, ClearPayment):
            acks = [e for e in effects if isinstance(e, AckPayment)]
            assert acks == [
                AckPayment(payment_id=command.payment_id, account=ACCOUNT, outcome=PaymentOutcome.APPLIED)
            ]

    @property
    def m(self) -> Meter:
        assert self.state is not None
        return self.state

    @initialize(
        clear_days=st.sampled_from([0, 0, 1, 15]),
        install_year=st.sampled_from([2022, 2022, 2022, 2018]),
        relay_capable=st.sampled_from([True, True, True, False]),
        control_mode=st.integers(0, 6),
        protected=st.sampled_from([False] * 5 + [True]),
        relay=st.sampled_from([RelayState.CONNECTED, RelayState.DISCONNECTED, RelayState.AWAITING_BUTTON]),
        opening=st.integers(-20_000, 200_000),
    )
    def register(
        self,
        clear_days: int,
        install_year: int,
        relay_capable: bool,
        control_mode: int,
        protected: bool,
        relay: RelayState,
        opening: int,
    ) -> None:
        self.policy = POLICIES[clear_days]
        self.opening = opening
        self.step(
            RegisterMeter(
                account=ACCOUNT,
                serial="SM-1",
                head_end="hes-a",
                install_year=install_year,
                relay_capable=relay_capable,
                control_mode=control_mode,
                protected=protected,
                relay=relay,
                opening_dues_paise=opening,
            )
        )

    @rule(amount=st.integers(0, 300_000), due_in_days=st.integers(0, 20), again=st.booleans())
    def post_bill(self, amount: int, due_in_days: int, again: bool) -> None:
        known = again and bool(self.bill_ids)
        bill_id = self.bill_ids[-1] if known else f"B{len(self.bill_ids) + 1}"
        due = datetime.fromtimestamp(self.now + due_in_days * 86_400, IST).date().isoformat()
        dues_before = self.m.dues_paise
        self.step(
            PostBill(account=ACCOUNT, bill_id=bill_id, amount_paise=amount, due_date=due, issued_at=self.now)
        )
        if known:
            assert self.m.dues_paise == dues_before, "a re-imported bill changed the dues"
        else:
            self.bill_ids.append(bill_id)
            self.bill_amounts[bill_id] = amount
            self.bills_total += amount

    @rule(
        amount=st.one_of(st.integers(1, 20_000), st.integers(1, 400_000)),
        cashless=st.booleans(),
        paid_earlier=st.integers(0, 3 * 86_400),
        redeliver=st.integers(0, 6),
        everything=st.sampled_from([False, False, True]),
    )
    def pay(self, amount: int, cashless: bool, paid_earlier: int, redeliver: int, everything: bool) -> None:
        recent = self.payment_ids[-RECENT_PAYMENT_IDS_KEPT:]
        if redeliver < len(recent):
            payment_id = recent[-1 - redeliver]  # at-least-once delivery from the desk
        else:
            payment_id = f"P{len(self.payment_ids) + 1}"
            if everything and self.m.dues_paise > 0:
                amount = self.m.dues_paise  # bias towards dues <= threshold: reconnection rules
        self.step(
            ClearPayment(
                account=ACCOUNT,
                payment_id=payment_id,
                amount_paise=amount,
                channel="upi" if cashless else "cash-counter",
                cashless=cashless,
                paid_at=max(1, self.now - paid_earlier),
            )
        )
        if payment_id not in self.payment_ids:
            self.payment_ids.append(payment_id)
            self.payments_total += amount

    @rule(delta=seconds)
    def advance_clock(self, delta: int) -> None:
        self.now += delta
        self.step(CheckMeter(account=ACCOUNT))

    @rule()
    def timer_fires(self) -> None:
        wake = next_check_at(self.m, self.policy)
        if wake is not None:
            assert wake >= self.rules_now, "next_check_at is in the past"
            self.now = max(self.now, wake)
            self.step(CheckMeter(account=ACCOUNT))

    @rule(days_ahead=st.integers(0, 8), hour=st.integers(0, 23), minute=st.sampled_from([0, 1, 59]))
    def check_at_a_local_time(self, days_ahead: int, hour: int, minute: int) -> None:
        """Land on nights, Sundays, holidays and window edges on purpose."""
        day = datetime.fromtimestamp(self.now, IST).date() + timedelta(days=days_ahead)
        target = int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=IST).timestamp())
        self.now = max(self.now, target)
        self.step(CheckMeter(account=ACCOUNT))

    @rule(days=st.integers(1, 20))
    def days_pass_with_the_timer_running(self, days: int) -> None:
        until = self.now + days * 86_400
        for _ in range(10):
            wake = next_check_at(self.m, self.policy)
            if wake is None or wake > until:
                break
            self.now = max(self.now, wake)
            self.step(CheckMeter(account=ACCOUNT))
        self.now = max(self.now, until)

    @rule(
        kind=st.sampled_from(
            ["ok", "ok", "ok", "mismatch", "retry", "final", "rejected", "expired", "stale"]
        ),
        delay=st.one_of(st.integers(0, 60), st.integers(0, 1_200)),
    )
    def relay_result(self, kind: str, delay: int) -> None:
        self.now += delay
        p = self.m.pending
        if kind == "stale" or p is None:
            old = [c for c in self.command_ids if p is None or c != p.command_id]
            if not old:
                return
            before = self.m
            self.step(
                ReportRelayResult(
                    account=ACCOUNT,
                    command_id=old[0],
                    status=RelayResultStatus.PROCESSED,
                    control_state=ControlState.CONNECTED,
                    output_state=True,
                )
            )
            assert self.m == before, "a result for an old command changed the meter"
            return
        connect = p.action is RelayAction.CONNECT
        button = self.m.profile.control_mode in BUTTON_CONTROL_MODES
        reached = {
            True: (ControlState.READY_FOR_RECONNECTION, False) if button else (ControlState.CONNECTED, True),
            False: (ControlState.DISCONNECTED, False),
        }
        status = RelayResultStatus.PROCESSED
        cs, out = reached[connect]
        retryable = False
        if kind == "mismatch":
            cs, out = reached[not connect]
        elif kind in ("retry", "final", "rejected"):
            status = RelayResultStatus.REJECTED if kind == "rejected" else RelayResultStatus.FAILED
            retryable = kind != "final"
        elif kind == "expired":
            status = RelayResultStatus.EXPIRED
        self.step(
            ReportRelayResult(
                account=ACCOUNT,
                command_id=p.command_id,
                status=status,
                control_state=cs if status is RelayResultStatus.PROCESSED else None,
                output_state=out if status is RelayResultStatus.PROCESSED else None,
                error_code=None if status is RelayResultStatus.PROCESSED else "TEMPORARY_FAILURE",
                retryable=retryable,
            )
        )

    @rule(
        reading=st.sampled_from(
            [
                (ControlState.CONNECTED, True),
                (ControlState.DISCONNECTED, False),
                (ControlState.READY_FOR_RECONNECTION, False),
                (ControlState.CONNECTED, False),
            ]
        ),
        delay=st.integers(0, 3_600),
    )
    def relay_read(self, reading: tuple[ControlState, bool], delay: int) -> None:
        self.now += delay
        cs, out = reading
        self.step(ReportMeterState(account=ACCOUNT, control_state=cs, output_state=out))

    @rule(
        # A deliberate disconnection parks the meter for good; keep it rarer than the others.
        action=st.sampled_from(
            [*OverrideAction, *(a for a in OverrideAction if a is not OverrideAction.DISCONNECT)]
        ),
        delay=st.integers(0, 86_400),
    )
    def engineer(self, action: OverrideAction, delay: int) -> None:
        self.now += delay
        self.step(EngineerOverride(account=ACCOUNT, action=action, engineer_id="E1", reason="property test"))

    @rule(data=st.data())
    def replay_from_a_snapshot(self, data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(self.journal)), label="k")
        assert apply_all(self.snapshots[k], self.journal[k:]) == self.state

    # ------------------------------------------------------------------ invariants

    @invariant()
    def money_is_conserved(self) -> None:
        if self.state is None:
            return
        surcharges = sum(e.amount_paise for e in self.journal if isinstance(e, SurchargeApplied))
        charges = sum(e.amount_paise for e in self.journal if isinstance(e, ReconnectionChargeApplied))
        rebates = sum(e.amount_paise for e in self.journal if isinstance(e, RebateGranted))
        expected = self.opening + self.bills_total + surcharges + charges - self.payments_total - rebates
        assert self.m.dues_paise == expected

    @invariant()
    def rebate_and_surcharge_come_once_per_bill_at_the_policy_rate(self) -> None:
        rebates = Counter(e.bill_id for e in self.journal if isinstance(e, RebateGranted))
        surcharges = Counter(e.bill_id for e in self.journal if isinstance(e, SurchargeApplied))
        assert all(n == 1 for n in rebates.values()) and all(n == 1 for n in surcharges.values())
        for e in self.journal:
            if isinstance(e, RebateGranted):
                amount = self.bill_amounts[e.bill_id]
                assert e.amount_paise == amount * self.policy.billing_cashless_rebate_bp // 10_000
            elif isinstance(e, SurchargeApplied):
                amount = self.bill_amounts[e.bill_id]
                assert 0 < e.base_paise <= amount
                assert e.amount_paise == e.base_paise * self.policy.billing_late_surcharge_bp // 10_000

    @invariant()
    def a_payment_is_credited_once(self) -> None:
        assert all(n == 1 for n in self.credited.values())
        assert set(self.credited) == set(self.payment_ids)

    @invariant()
    def a_paid_up_eligible_meter_is_never_left_dark(self) -> None:
        if self.state is None:
            return
        m = self.m
        if (
            remote_switching_eligible(m.profile, self.policy)
            and m.dues_paise <= self.policy.reconnection_threshold_paise
            and m.desired is not RelayTarget.OFF_BY_ENGINEER
        ):
            assert not (m.relay is RelayState.DISCONNECTED and m.pending is None and m.work_order is None)

    @invariant()
    def a_pending_command_always_heads_where_the_meter_is_wanted(self) -> None:
        if self.state is not None and self.m.pending is not None:
            wanted_on = self.m.desired is RelayTarget.CONNECTED
            assert (self.m.pending.action is RelayAction.CONNECT) == wanted_on

    @invariant()
    def the_timer_is_never_set_in_the_past(self) -> None:
        if self.state is not None:
            wake = next_check_at(self.m, self.policy)
            assert wake is None or wake >= self.rules_now


MeterMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_meter_machine = MeterMachine.TestCase
