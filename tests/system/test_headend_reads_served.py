"""Prepaid reads from the head-end on a real node (issue 16 item 4, docs/prepaid-headend.md gaps 1-2):
`jodo serve --lab-clock` as a process with its built-in simulator. Moving the lab clock past midnight
IST makes the simulator send every meter's read of the day that ended (`HesReads`); the gateway maps
serial -> account and sends `ReportConsumption` to the meters' shard groups. Prepaid balances fall by
exactly the domain's price of the simulator's `daily_wh`, with no file imported; a postpaid meter's
read is ignored and the simulator's unregistered serials are counted as unknown."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from domain.policy import load_policy
from domain.prepaid import month_charge_paise
from domain.state import DayRead
from headend.sim.load import daily_wh, read_id
from tests.system.serving import Serving, serving, until

pytestmark = pytest.mark.system

PREPAID = {"N0000000001": "MPW00000001", "N0000000002": "MPW00000002"}
POSTPAID = ("N0000000003", "MPW00000003")
OPENING = 50_000  # Rs 500
SIM_METERS = 10
SEED = 4


def _expected(serial: str, days: list[date]) -> int:
    """The balance after these days' reads, priced by the domain (one month here)."""
    reads = [DayRead(day=d.isoformat(), read_id=read_id(serial, d), energy_wh=daily_wh(SEED, serial, d))
             for d in days]
    return OPENING - month_charge_paise(reads, "2026-11", load_policy(None))


def _next(h: int, m: int) -> str:
    """The end of the half hour starting at h:m on 1 November 2026 (24:00 is 2 November 00:00)."""
    h, m = (h, 30) if m == 0 else (h + 1, 0)
    return "2026-11-02T00:00" if h == 24 else f"2026-11-01T{h:02d}:{m:02d}"


def _until_balances(node: Serving, days: list[date]) -> None:
    want = {account: _expected(serial, days) for account, serial in PREPAID.items()}
    until(f"balances after {days}, expected {want}",
          lambda: {account: node.show(account).get("balance_paise") for account in PREPAID},
          lambda got: got == want, timeout=60)


def test_a_lab_clock_past_midnight_debits_prepaid_meters_from_the_simulators_reads(tmp_path: Path) -> None:
    argv = ["serve", "--sim-meters", str(SIM_METERS), "--sim-seed", str(SEED),
            "--lab-clock", "2026-11-02T10:00"]
    with serving(tmp_path, argv) as node:
        for account, serial in (*PREPAID.items(), POSTPAID):
            node.inject("message", "RegisterMeter", f"account={account}", f"serial={serial}",
                    "install_year=2022")
        for account in PREPAID:
            node.inject("message", "SetBillingMode", f"account={account}", "mode=prepaid",
                    f"opening_balance_paise={OPENING}", f"request_id=bm-{account}")
        for account in PREPAID:
            until(f"{account}'s opening balance", lambda a=account: node.show(a),
                  lambda doc: doc.get("balance_paise") == OPENING)

        node.inject("clock", "2026-11-02T23:00")  # the same day: nothing reported
        node.inject("clock", "2026-11-03T00:30")  # Monday 2 November ended
        _until_balances(node, [date(2026, 11, 2)])
        for account in PREPAID:
            assert node.show(account)["balance_paise"] < OPENING  # the reads really cost something
        assert node.show(POSTPAID[0]).get("billing_mode") == "postpaid"

        node.inject("clock", "2026-11-05T06:00")  # two more days ended: both reported
        days = [date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)]
        _until_balances(node, days)

        unknown = 'jodo_headend_reads_total{head_end="hes-sim",outcome="unknown_serial"}'
        counted = until(unknown, lambda: node.metric(unknown),  # counted after the round ends
                        lambda n: n >= (SIM_METERS - 3) * len(days))
        assert counted == (SIM_METERS - 3) * len(days)
        assert node.metric('jodo_headend_reads_total{head_end="hes-sim",outcome="forwarded"}') == 2 * 3
        assert node.metric('jodo_headend_reads_total{head_end="hes-sim",outcome="postpaid"}') == 3
        assert node.metric('jodo_prepaid_reads_total{outcome="debited"}') == 2 * 3
        # an interval file for a meter the head-end does not read: summed per day by `jodo import reads`
        node.inject("message", "RegisterMeter", "account=N0000000004", "serial=EXT0001",
                "install_year=2022")
        node.inject("message", "SetBillingMode", "account=N0000000004", "mode=prepaid",
                f"opening_balance_paise={OPENING}", "request_id=bm-4")
        rows = ["account,interval_start,interval_end,energy_wh"]
        rows += [f"N0000000004,2026-11-01T{h:02d}:{m:02d},{_next(h, m)},{150 + h}"
                 for h in range(24) for m in (0, 30)]
        (tmp_path / "intervals.csv").write_text("\n".join(rows) + "\n")
        done = node.jodo("import", "reads", str(tmp_path / "intervals.csv"), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["applied"] == 1
        wh = sum(2 * (150 + h) for h in range(24))
        day = [DayRead(day="2026-11-01", read_id="N0000000004:2026-11-01", energy_wh=wh)]
        want = OPENING - month_charge_paise(day, "2026-11", load_policy(None))
        until("N0000000004 debited for its interval day", lambda: node.show("N0000000004"),
              lambda doc: doc.get("balance_paise") == want)

        history = node.jodo("meter", "history", "N0000000001", "--json")
        debits = [e for e in json.loads(history.stdout)["events"] if e["event"] == "ConsumptionDebited"]
        assert [(d["read_id"], d["source"]) for d in debits] == [
            (read_id("MPW00000001", d), "hes-sim") for d in reversed(days)], history.stdout
