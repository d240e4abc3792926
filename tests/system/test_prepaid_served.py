"""A prepaid meter on a real node (issue 16): `jodo serve --lab-clock` as a process, driven through the
real CLI. Its balance runs out at night: the consumer is told and the cut is held (counted in
jodo_prepaid_disconnections_held_total); when the clock reaches the allowed hours the meter is cut; a
recharge (an ordinary payment) reconnects it at once. `jodo meter show` shows the prepaid balance."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.serving import Serving, serving, until

pytestmark = pytest.mark.system

ACCOUNT = "N0000000001"  # the simulator's first meter (serial MPW00000001)


def _until(node: Serving, what: str, ok: Any) -> dict[str, Any]:
    return until(what, lambda: node.show(ACCOUNT), ok)


def test_a_prepaid_meter_runs_out_at_night_is_held_cut_in_the_morning_and_a_recharge_reconnects(
    tmp_path: Path,
) -> None:
    # Monday 2 November 2026, 19:00 IST: inside the night window (18:00-08:00)
    with serving(tmp_path, ["serve", "--sim-meters", "10", "--lab-clock", "2026-11-02T19:00"]) as node:
        node.inject("message", "RegisterMeter", f"account={ACCOUNT}", "serial=MPW00000001",
                "install_year=2022")
        node.inject("message", "SetBillingMode", f"account={ACCOUNT}", "mode=prepaid",
                "opening_balance_paise=5000", "request_id=bm-1")
        doc = _until(node, "prepaid", lambda d: d.get("billing_mode") == "prepaid")
        assert doc["balance_paise"] == 5_000 and doc["relay"] == "connected"
        shown = node.jodo("meter", "show", ACCOUNT)
        assert "prepaid balance" in shown.stdout and "Rs 50.00" in shown.stdout, shown.stdout

        for day, wh in (("2026-11-01", 4_000), ("2026-11-02", 9_000)):
            node.inject("message", "ReportConsumption", f"account={ACCOUNT}", f"read_id=MPW00000001:{day}",
                    f"read_date={day}", f"energy_wh={wh}")
        doc = _until(node, "debited to zero or below", lambda d: d["balance_paise"] <= 0)
        held = _until(node, "held by the night window",
                      lambda d: "zero" in d["low_balance_notified"] and d["switch_off_not_before"])
        assert held["relay"] == "connected" and held["desired"] == "connected"  # held, not cut
        assert node.metric("jodo_prepaid_disconnections_held_total") == 1
        assert node.metric('jodo_prepaid_reads_total{outcome="debited"}') == 2
        assert node.metric('jodo_prepaid_meters{band="negative"}') == 1

        node.inject("clock", "2026-11-02T23:59")  # still night (the shards sweep before the CLI returns)
        assert node.show(ACCOUNT)["relay"] == "connected"
        assert node.metric("jodo_prepaid_disconnections_held_total") == 1

        node.inject("clock", "2026-11-03T08:00")  # Tuesday 08:00: the window ends
        cut = _until(node, "cut at 08:00", lambda d: d["relay"] == "disconnected")
        assert cut["balance_paise"] == doc["balance_paise"]  # no reconnection charge for a prepaid cut

        node.inject("payment", "--account", ACCOUNT, "--amount-paise", "20000")
        back = _until(node, "reconnected by the recharge", lambda d: d["relay"] == "connected")
        assert back["balance_paise"] == doc["balance_paise"] + 20_000 and back["desired"] == "connected"
        history = node.jodo("meter", "history", ACCOUNT)
        assert "ConsumptionDebited" in history.stdout and "LowBalanceNotified" in history.stdout

        # emergency credit through the admin API: granted once, then refused with the reason
        status, granted = _emergency(node, ACCOUNT, "ec-1")
        assert status == 200 and granted["meter"]["emergency_credit_paise"] == 20_000
        assert granted["meter"]["balance_paise"] == back["balance_paise"] + 20_000
        assert _emergency(node, ACCOUNT, "ec-1")[0] == 200  # the same request again: nothing twice
        assert node.show(ACCOUNT)["balance_paise"] == back["balance_paise"] + 20_000
        status, refused = _emergency(node, ACCOUNT, "ec-2")
        assert status == 409 and "outstanding" in refused["detail"]
        assert _emergency(node, "N0000000009", "ec-3")[0] == 404
        assert node.metric('jodo_emergency_credits_total{event="granted"}') == 1

        # a recharge off KERC's rule (not a multiple of Rs 100) is credited in full and flagged: all of it
        # pays back the emergency credit first (20 000 outstanding), so the balance stays as it was
        before = node.show(ACCOUNT)["balance_paise"]
        node.inject("payment", "--account", ACCOUNT, "--amount-paise", "10050")
        _until(node, "the odd recharge credited", lambda d: d["emergency_credit_paise"] == 20_000 - 10_050
               and d["balance_paise"] == before)
        flag = 'jodo_prepaid_recharges_off_rule_total{rule="multiple"}'
        deadline = time.monotonic() + 10
        while node.metric(flag) != 1:  # counted after the shard's commit, with the credit
            assert time.monotonic() < deadline, f"{flag} never reached 1"
            time.sleep(0.05)


def _emergency(node: Serving, account: str, request_id: str) -> tuple[int, dict[str, Any]]:
    token = (node.workdir / "data" / "admin.token").read_text().strip()
    req = urllib.request.Request(f"{node.url}/v1/meters/{account}/emergency-credit", method="POST",
                                 data=json.dumps({"request_id": request_id}).encode(),
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
