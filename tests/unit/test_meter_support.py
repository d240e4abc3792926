"""Helpers for the meter-core tests: a local-time clock and a meter driven through decide/evolve.

(A test module so the file layout stays within tests/unit/test_meter_*.py; it tests its own helpers.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from domain.commands import (
    CheckMeter,
    ClearPayment,
    EngineerOverride,
    MeterCommand,
    PostBill,
    RegisterMeter,
    ReportConsumption,
    ReportMeterState,
    ReportRelayResult,
    RequestEmergencyCredit,
    SetBillingMode,
)
from domain.effects import Effect, SendRelayCommand
from domain.enums import BillingMode, ControlState, OverrideAction, RelayAction, RelayResultStatus
from domain.events import MeterEvent
from domain.meter import apply_all, decide, handle, next_check_at
from domain.policy import Policy, load_policy
from domain.state import Meter

IST = ZoneInfo("Asia/Kolkata")
POLICY = load_policy()
T = TypeVar("T")
ACCOUNT = "N1234567890"


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch seconds of a local (IST) time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=IST).timestamp())


def local(t: int) -> datetime:
    return datetime.fromtimestamp(t, IST)


def of_type(items: tuple[Any, ...] | list[Any], kind: type[T]) -> list[T]:
    return [x for x in items if isinstance(x, kind)]


@dataclass
class Sim:
    """One meter, driven command by command; every step checks decide == handle == fold."""

    policy: Policy = POLICY
    state: Meter | None = None
    now: int = 0
    last_events: tuple[MeterEvent, ...] = ()
    last_effects: tuple[Effect, ...] = ()
    journal: list[MeterEvent] = field(default_factory=list)
    # everything that passed through, for the codec's round-trip tests
    commands_seen: list[MeterCommand] = field(default_factory=list)
    effects_seen: list[Effect] = field(default_factory=list)
    states_seen: list[Meter] = field(default_factory=list)

    def send(self, command: MeterCommand, now: int | None = None) -> Sim:
        if now is not None:
            self.now = now
        events, effects = decide(self.state, command, self.now, self.policy)
        again = decide(self.state, command, self.now, self.policy)
        assert again == (events, effects), "decide is not deterministic"
        new_state, h_events, h_effects = handle(self.state, command, self.now, self.policy)
        assert (h_events, h_effects) == (events, effects)
        folded = apply_all(self.state, events)
        assert folded == new_state
        self.state = folded
        self.last_events, self.last_effects = events, effects
        self.journal.extend(events)
        self.commands_seen.append(command)
        self.effects_seen.extend(effects)
        if folded is not None:
            self.states_seen.append(folded)
        return self

    @property
    def m(self) -> Meter:
        assert self.state is not None
        return self.state

    def register(self, now: int, **kw: Any) -> Sim:
        args: dict[str, Any] = {
            "account": ACCOUNT,
            "serial": "SM-0001",
            "head_end": "hes-a",
            "install_year": 2022,
            "relay_capable": True,
            "control_mode": 2,
        }
        args.update(kw)
        return self.send(RegisterMeter(**args), now)

    def bill(self, now: int, amount: int, due_date: str, bill_id: str = "B1") -> Sim:
        return self.send(
            PostBill(account=ACCOUNT, bill_id=bill_id, amount_paise=amount, due_date=due_date, issued_at=now),
            now,
        )

    def pay(
        self,
        now: int,
        amount: int,
        payment_id: str = "P1",
        *,
        cashless: bool = True,
        paid_at: int | None = None,
    ) -> Sim:
        return self.send(
            ClearPayment(
                account=ACCOUNT,
                payment_id=payment_id,
                amount_paise=amount,
                channel="upi" if cashless else "cash-counter",
                cashless=cashless,
                paid_at=now if paid_at is None else paid_at,
            ),
            now,
        )

    def check(self, now: int | None = None) -> Sim:
        return self.send(CheckMeter(account=ACCOUNT), now)

    def wake(self) -> Sim:
        """Let the shard's timer fire: CheckMeter at next_check_at."""
        wake = next_check_at(self.m, self.policy)
        assert wake is not None, "nothing scheduled"
        assert wake >= self.now
        return self.check(wake)

    def result(
        self,
        now: int,
        status: RelayResultStatus = RelayResultStatus.PROCESSED,
        control_state: ControlState | None = None,
        output_state: bool | None = None,
        *,
        command_id: str | None = None,
        error_code: str | None = None,
        retryable: bool = False,
    ) -> Sim:
        if command_id is None:
            assert self.m.pending is not None, "no pending command"
            command_id = self.m.pending.command_id
        return self.send(
            ReportRelayResult(
                account=ACCOUNT,
                command_id=command_id,
                status=status,
                control_state=control_state,
                output_state=output_state,
                error_code=error_code,
                retryable=retryable,
            ),
            now,
        )

    def connected_ok(self, now: int) -> Sim:
        return self.result(now, control_state=ControlState.CONNECTED, output_state=True)

    def disconnected_ok(self, now: int) -> Sim:
        return self.result(now, control_state=ControlState.DISCONNECTED, output_state=False)

    def read(self, now: int, control_state: ControlState, output_state: bool) -> Sim:
        return self.send(
            ReportMeterState(account=ACCOUNT, control_state=control_state, output_state=output_state), now
        )

    def override(self, now: int, action: OverrideAction, engineer: str = "E42", reason: str = "test") -> Sim:
        return self.send(
            EngineerOverride(account=ACCOUNT, action=action, engineer_id=engineer, reason=reason), now
        )

    def prepaid(self, now: int, balance: int, request_id: str | None = "BM1") -> Sim:
        return self.send(SetBillingMode(account=ACCOUNT, mode=BillingMode.PREPAID,
                                        opening_balance_paise=balance, request_id=request_id), now)

    def consume(self, now: int, day: str, wh: int, read_id: str | None = None) -> Sim:
        return self.send(ReportConsumption(account=ACCOUNT, read_id=read_id or f"SM-0001:{day}",
                                           read_date=day, energy_wh=wh), now)

    def emergency(self, now: int, request_id: str = "EC1") -> Sim:
        return self.send(RequestEmergencyCredit(account=ACCOUNT, request_id=request_id), now)

    def sent(self, action: RelayAction | None = None) -> list[SendRelayCommand]:
        sends = of_type(self.last_effects, SendRelayCommand)
        return [s for s in sends if action is None or s.action is action]


# A standard overdue story (2025 calendar: 10 March is a Monday). Bill due 10 March; overdue from
# 11 March 00:00, when the notice is served; 15 clear days (12..26 March) → lawful from 27 March.
DUE_DATE = "2025-03-10"
OVERDUE = at(2025, 3, 11)
LAWFUL = at(2025, 3, 27, 8)  # Thursday, first allowed instant


def overdue_meter(amount: int = 100_000, **register: Any) -> Sim:
    """A meter with an overdue bill and a served notice, the clock at the overdue instant."""
    sim = Sim().register(at(2025, 3, 1, 10), **register)
    sim.bill(at(2025, 3, 1, 10), amount, DUE_DATE)
    return sim.wake()


def disconnected_meter(amount: int = 100_000, **register: Any) -> Sim:
    """A meter disconnected for dues (confirmed), the clock just after."""
    sim = overdue_meter(amount, **register).wake()
    return sim.disconnected_ok(sim.now + 5)


def test_the_helper_clock_is_indian_standard_time() -> None:
    assert local(at(2025, 3, 10, 18)).hour == 18
    assert at(2025, 3, 10, 18) - at(2025, 3, 10, 12, 30) == 5 * 3600 + 1800
    assert local(OVERDUE).weekday() == 1 and local(LAWFUL).weekday() == 3


def test_the_overdue_story_serves_a_notice_maturing_after_fifteen_clear_days() -> None:
    sim = overdue_meter()
    assert sim.now == OVERDUE
    assert sim.m.notice_at == OVERDUE
    assert next_check_at(sim.m, sim.policy) == LAWFUL
