"""The meter state machine of test_meter_machine.py run on prepaid meters (issue 16): every rule of that
machine (payments with redeliveries, clocks landing on nights, Sundays and window edges, timers, relay
results, reads, engineers, replays from snapshots) plus consumption reads in any order (duplicates,
second reads of a day, gaps) and emergency credit requests. Besides that machine's checks (no automatic
disconnect inside a window or of an exempt meter; decide == handle == the fused payment path; replay):

* the balance is exact in paise: opening + recharges + emergency credit - recovered - debits, and each
  month's debits add up to that month's charge on the days it ends with (true-ups and estimates
  included);
* emergency credit is recovered exactly once: never more than granted, at most once per payment id,
  each time min(recharge, outstanding);
* at zero or below a meter that may be cut is cut, or held with its timer set for the end of the window,
  and the consumer was told ("zero") before any automatic cut;
* a meter with a balance above zero that can be switched remotely is never left dark.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from domain.commands import (
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportConsumption,
    RequestEmergencyCredit,
    SetBillingMode,
)
from domain.effects import SendRelayCommand
from domain.enums import BillingMode, CommandOrigin, RelayAction, RelayState, RelayTarget
from domain.events import (
    ConsumptionDebited,
    EmergencyCreditGranted,
    EmergencyCreditRecovered,
    PaymentApplied,
    ReconnectionChargeApplied,
)
from domain.meter import next_check_at
from domain.prepaid import month_charge_paise
from domain.rules import remote_switching_eligible
from domain.state import DayRead
from domain.windows import disconnection_allowed, local_date
from tests.property.test_meter_machine import ACCOUNT, POLICIES, MeterMachine


class PrepaidMeterMachine(MeterMachine):
    def __init__(self) -> None:
        super().__init__()
        self.balance_opening = 0
        self.emergency_ids: list[str] = []

    def step(self, command: MeterCommand) -> None:
        super().step(command)
        m = self.m
        if m.prepaid is None or m.desired is not RelayTarget.OFF_FOR_DUES:
            return  # (an engineer's disconnection is the engineer's: no "zero" notice needed)
        for effect in self.last_effects:
            if (isinstance(effect, SendRelayCommand) and effect.action is RelayAction.DISCONNECT
                    and effect.origin is CommandOrigin.AUTOMATIC):
                assert "zero" in m.prepaid.notified, "cut before the consumer was told"

    @initialize(
        clear_days=st.sampled_from([0, 15]),
        install_year=st.sampled_from([2022, 2022, 2022, 2018]),
        control_mode=st.integers(0, 6),
        protected=st.sampled_from([False] * 7 + [True]),
        relay=st.sampled_from([RelayState.CONNECTED, RelayState.CONNECTED, RelayState.DISCONNECTED]),
        balance=st.one_of(st.integers(-20_000, 60_000), st.integers(0, 2_000)),
    )
    def register(  # type: ignore[override]
        self, clear_days: int, install_year: int, control_mode: int, protected: bool, relay: RelayState,
        balance: int,
    ) -> None:
        self.policy = POLICIES[clear_days]
        self.step(RegisterMeter(account=ACCOUNT, serial="SM-1", head_end="hes-a", install_year=install_year,
                                relay_capable=True, control_mode=control_mode, protected=protected,
                                relay=relay, opening_dues_paise=5_000))
        self.balance_opening = balance
        self.step(SetBillingMode(account=ACCOUNT, mode=BillingMode.PREPAID, opening_balance_paise=balance,
                                 request_id="to-prepaid"))
        assert self.m.prepaid is not None and -self.m.dues_paise == balance

    @rule(amount=st.integers(1, 300_000))
    def post_bill(self, amount: int, due_in_days: int = 0, again: bool = False) -> None:  # type: ignore[override]
        before = self.m
        self.step(PostBill(account=ACCOUNT, bill_id=f"B{amount}", amount_paise=amount, due_date="2025-03-10",
                           issued_at=self.now))
        assert self.m == before, "a prepaid meter took a bill"

    @rule(days_ago=st.integers(0, 40), wh=st.one_of(st.integers(0, 3_000), st.integers(0, 40_000)),
          other_id=st.sampled_from([False] * 5 + [True]))
    def read(self, days_ago: int, wh: int, other_id: bool) -> None:
        day = (local_date(self.now, self.policy) - timedelta(days=days_ago)).isoformat()
        read_id = f"SM-1:{day}" + (f":{wh}" if other_id else "")
        self.step(ReportConsumption(account=ACCOUNT, read_id=read_id, read_date=day, energy_wh=wh))

    @rule(again=st.booleans())
    def emergency(self, again: bool) -> None:
        """A new request, or the last granted one delivered again (which changes nothing)."""
        last = self.m.prepaid.emergency_request_id if self.m.prepaid is not None else None
        request_id = last if again and last is not None else f"EC{len(self.emergency_ids)}"
        before = self.m
        self.step(RequestEmergencyCredit(account=ACCOUNT, request_id=request_id))
        if request_id == last:
            assert self.m == before, "a redelivered emergency credit request changed the meter"
        self.emergency_ids.append(request_id)

    # ------------------------------------------------------------------ invariants

    def _sum(self, kind: type, field: str = "amount_paise") -> int:
        return sum(getattr(e, field) for e in self.journal if isinstance(e, kind))

    @invariant()
    def money_is_conserved(self) -> None:  # the balance, exact in paise
        if self.state is None or self.m.prepaid is None:
            return
        granted = self._sum(EmergencyCreditGranted)
        recovered = self._sum(EmergencyCreditRecovered)
        debited = self._sum(ConsumptionDebited, "debit_paise")
        expected = self.balance_opening + self.payments_total + granted - recovered - debited
        assert -self.m.dues_paise == expected
        assert self._sum(ReconnectionChargeApplied) == 0

    @invariant()
    def each_months_debits_are_its_charge(self) -> None:
        last: dict[str, DayRead] = {}
        debits: Counter[str] = Counter()
        for e in self.journal:
            if isinstance(e, ConsumptionDebited):
                last[e.read_date] = DayRead(day=e.read_date, read_id=e.read_id, energy_wh=e.energy_wh,
                                            estimated=e.estimated)
                debits[e.read_date[:7]] += e.debit_paise
                assert e.energy_paise + e.fixed_paise + e.duty_paise == e.debit_paise
        by_month: defaultdict[str, list[DayRead]] = defaultdict(list)
        for d in last.values():
            by_month[d.day[:7]].append(d)
        for month, days in by_month.items():
            assert debits[month] == month_charge_paise(days, month, self.policy)
        read_ids = [e.read_id for e in self.journal if isinstance(e, ConsumptionDebited) and not e.estimated]
        assert len(read_ids) == len(set(read_ids)), "a read id debited twice"

    @invariant()
    def emergency_credit_is_recovered_exactly_once(self) -> None:
        if self.state is None or self.m.prepaid is None:
            return
        outstanding = 0
        recovered_by: Counter[str] = Counter()
        for e in self.journal:
            if isinstance(e, EmergencyCreditGranted):
                assert outstanding == 0, "granted with credit outstanding"
                outstanding += e.amount_paise
            elif isinstance(e, EmergencyCreditRecovered):
                recovered_by[e.payment_id] += 1
                assert 0 < e.amount_paise <= outstanding
                outstanding -= e.amount_paise
                assert e.outstanding_after_paise == outstanding
            elif isinstance(e, PaymentApplied) and recovered_by[e.payment_id] == 0:
                assert outstanding == 0, "a recharge left emergency credit unrecovered"
        assert all(n == 1 for n in recovered_by.values())
        assert self.m.prepaid.emergency_outstanding_paise == outstanding
        months = [e.period for e in self.journal if isinstance(e, EmergencyCreditGranted)]
        assert len(months) == len(set(months)), "emergency credit twice in a month"

    @invariant()
    def a_paid_up_eligible_meter_is_never_left_dark(self) -> None:
        if self.state is None or self.m.prepaid is None:
            return
        m = self.m
        if (remote_switching_eligible(m.profile, self.policy) and m.dues_paise < 0
                and m.desired is not RelayTarget.OFF_BY_ENGINEER):
            assert not (m.relay is RelayState.DISCONNECTED and m.pending is None and m.work_order is None)

    @invariant()
    def at_zero_every_consumer_is_told_protected_or_on_hold_too(self) -> None:
        if self.state is None or self.m.prepaid is None:
            return
        m = self.m
        if m.dues_paise >= 0 and m.desired is not RelayTarget.OFF_BY_ENGINEER:
            assert "zero" in m.prepaid.notified, "at zero and not told"

    @invariant()
    def at_zero_a_meter_is_cut_or_held_until_the_window_ends(self) -> None:
        if self.state is None or self.m.prepaid is None:
            return
        m = self.m
        if m.dues_paise < 0 or m.protected or m.on_hold or m.desired is not RelayTarget.CONNECTED:
            return
        assert "zero" in m.prepaid.notified, "at zero and not told"
        assert not disconnection_allowed(self.rules_now, self.policy), "at zero, allowed, and not cut"
        sonb = m.switch_off_not_before
        assert sonb is not None and sonb > self.rules_now and disconnection_allowed(sonb, self.policy)
        wake = next_check_at(m, self.policy)
        assert wake is not None and wake <= sonb


PrepaidMeterMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_prepaid_meter_machine = PrepaidMeterMachine.TestCase
