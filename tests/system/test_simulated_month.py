"""A simulated month on real processes with the manual clock: bills, notices, windows, holidays.

Disconnections happen only when the rules allow (15 clear days after the notice, 08:00-18:00 local,
not on Sundays or holidays, never a protected meter or one below the minimum dues); payments at night
and on holidays still reconnect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from domain.commands import PostBill, RegisterMeter
from domain.enums import RelayAction, RelayState
from domain.events import RelayCommandIssued
from headend.sim.config import SimConfig
from jodo.node import Node
from protocols.headend import HesControlState
from tests.system.jodo_fixtures import HEAD_END, Jodo, account, eventually, payment, running_jodo, serial

pytestmark = [pytest.mark.system, pytest.mark.slow]

IST = ZoneInfo("Asia/Kolkata")
METERS = 12
PROTECTED, SMALL, PAYS_EARLY = 0, 1, 2
NIGHT_PAYER, HOLIDAY_PAYER = 3, 4
POLICY = 'disconnection.holidays = ["2026-01-26", "2026-02-03"]\n'


def at(month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, month, day, hour, minute, tzinfo=IST).timestamp())


def local(t: int) -> datetime:
    return datetime.fromtimestamp(t, IST)


def walk(j: Jodo, start: int, end: int, step: int = 3600) -> None:
    """Move the clock in steps; after each, let the head-end answer what that hour sent (a real
    head-end answers within a command's 15-minute expiry, the simulator within milliseconds)."""
    for t in range(start, end + 1, step):
        j.client.set_clock(t)
        eventually(lambda: all(j.client.shard_status(g).pending_commands == 0 for g in j.client.shard),
                   timeout=20, what=f"relay commands of {local(t)} to finish")


def connected(j: Jodo, i: int) -> bool:
    return j.sim.relay_state(serial(i)).control_state == HesControlState.CONNECTED


def disconnects(j: Jodo, i: int) -> list[RelayCommandIssued]:
    return [e for e in j.client.history(account(i), limit=200)
            if isinstance(e, RelayCommandIssued) and e.action is RelayAction.DISCONNECT]


def test_a_month_of_rules_on_the_manual_clock(start_node: Callable[..., Node], tmp_path: Path) -> None:
    sim = SimConfig(meters=METERS, seed=3)  # every relay starts closed
    start = at(1, 2, 10)
    with running_jodo(start_node, tmp_path, meters=METERS, sim=sim, manual_clock=True, start_at=start,
                      policy_text=POLICY) as j:
        meters = [
            RegisterMeter(account=account(i), serial=serial(i), head_end=HEAD_END, install_year=2022,
                          relay_capable=True, control_mode=2, protected=(i == PROTECTED))
            for i in range(METERS)
        ]
        bills = [
            PostBill(account=account(i), bill_id=f"B-{i}", due_date="2026-01-09", issued_at=start,
                     amount_paise=20_000 if i == SMALL else 200_000)
            for i in range(METERS)
        ]
        assert j.client.send(meters) == [] and j.client.send(bills) == []
        walk(j, start, at(1, 15, 12))
        # the notice (served at the first check after the due date) has not matured: nobody is cut
        j.client.pay([payment(PAYS_EARLY, amount=200_000, now=at(1, 15, 12))])
        walk(j, at(1, 15, 13), at(1, 27, 7))
        assert all(not disconnects(j, i) for i in range(METERS)), "a disconnect before 27 Jan 08:00"
        walk(j, at(1, 27, 8), at(1, 27, 12))
        cut = [i for i in range(METERS) if disconnects(j, i)]
        assert set(cut) == set(range(METERS)) - {PROTECTED, SMALL, PAYS_EARLY}
        for i in cut:
            for e in disconnects(j, i):
                when = local(e.at)
                assert when >= local(at(1, 27, 8)), (i, when)  # 15 clear days; 26 Jan is a holiday
                assert 8 <= when.hour < 18 and when.weekday() != 6, (i, when)
        serials = [serial(i) for i in cut]
        eventually(lambda: all(s.control_state == HesControlState.DISCONNECTED
                               for s in j.sim.relay_states(serials)), what="the cut meters open")
        walk(j, at(1, 27, 13), at(1, 27, 23), step=600)  # results confirmed, reconnection charge added

        # a payment at 23:30 reconnects that night
        owed = j.client.meter(account(NIGHT_PAYER))
        assert owed is not None and owed.relay is RelayState.DISCONNECTED
        j.client.pay([payment(NIGHT_PAYER, amount=owed.dues_paise, now=at(1, 27, 23, 30))])
        j.client.set_clock(at(1, 27, 23, 31))
        eventually(lambda: connected(j, NIGHT_PAYER), what="a night payment to reconnect")

        # a payment on a holiday reconnects the same day
        walk(j, at(1, 28, 0), at(2, 3, 11))
        owed = j.client.meter(account(HOLIDAY_PAYER))
        assert owed is not None and owed.relay is RelayState.DISCONNECTED
        j.client.pay([payment(HOLIDAY_PAYER, amount=owed.dues_paise, now=at(2, 3, 11))])
        j.client.set_clock(at(2, 3, 11, 1))
        eventually(lambda: connected(j, HOLIDAY_PAYER), what="a holiday payment to reconnect")
        for i in (PROTECTED, SMALL, PAYS_EARLY):
            assert j.sim.relay_state(serial(i)).control_state == HesControlState.CONNECTED
