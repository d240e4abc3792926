"""A prepaid meter that keeps its own credit, on a real node with a CIM head-end (issue 16 item 4).

`jodo hes-sim --protocol cim` and `jodo serve` as processes, the node's policy listing the CIM head-end in
``prepaid.meter_credit_head_ends``. Making the meter prepaid sends it its opening balance and a recharge
sends the new one: each reaches the simulator as an EndDeviceControl 3.20.22.13 whose creditAmount is the
balance in rupees (the simulator keeps it in paise), the node shows the last update applied and counts
it in jodo_meter_credit_updates_total."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import free_port
from tests.system.serving import ROOT, serving, until

pytestmark = pytest.mark.system

ACCOUNT = "N0000000001"
SERIAL = "MPW00000001"


def _sim_credits(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/credits", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_a_recharge_of_a_meter_keeping_its_own_credit_reaches_the_cim_head_end_as_a_credit_update(
    tmp_path: Path,
) -> None:
    token = tmp_path / "cim-token"
    token.write_text("credit-token\n")
    port_file = tmp_path / "cim.port"
    sim_log = (tmp_path / "cim-sim.out").open("wb")
    sim = subprocess.Popen([sys.executable, "-m", "jodo.cli", "hes-sim", "--protocol", "cim", "--port", "0",
                            "--port-file", str(port_file), "--meters", "10", "--cim-token-file", str(token)],
                           stdout=sim_log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        port = until("the CIM simulator's port",
                      lambda: port_file.exists() and port_file.read_text().strip(), bool)
        policy = tmp_path / "policy.toml"
        policy.write_text('[prepaid]\nmeter_credit_head_ends = ["hes-cim"]\n')
        head_ends = f"""
[[head_ends]]
name = "hes-cim"
kind = "cim"
port = {port}
cim_url = "http://127.0.0.1:{port}/cim/EndDeviceControls"
cim_callback_host = "127.0.0.1"
cim_callback_port = {free_port()}
cim_token_file = "{token}"
cim_callback_timeout_s = 20.0
"""
        extra = f'[policy]\npath = "{policy}"\n'
        with serving(tmp_path, ["serve"], head_ends=head_ends, extra=extra) as node:
            node.inject("message", "RegisterMeter", f"account={ACCOUNT}", f"serial={SERIAL}",
                    "head_end=hes-cim", "install_year=2022", "control_mode=4")
            node.inject("message", "SetBillingMode", f"account={ACCOUNT}", "mode=prepaid",
                    "opening_balance_paise=5000", "request_id=bm-1")
            opened = until("the opening balance at the head-end", lambda: _sim_credits(int(port)),
                            lambda d: d["credits"].get(SERIAL) == 5_000)
            assert [(s, p) for _, s, p in opened["log"]] == [(SERIAL, 5_000)]
            until("the opening update applied", lambda: node.show(ACCOUNT),
                   lambda d: d.get("meter_credit", {}).get("outcome") == "applied")

            node.inject("payment", "--account", ACCOUNT, "--amount-paise", "20050")
            got = until("the recharge's balance at the head-end", lambda: _sim_credits(int(port)),
                         lambda d: d["credits"].get(SERIAL) == 25_050)
            assert [p for _, _, p in got["log"]] == [5_000, 25_050]  # in order, each once
            assert got["log"][0][0] != got["log"][1][0]  # a new update (command id) per balance
            shown = until("the recharge's update applied", lambda: node.show(ACCOUNT),
                           lambda d: d.get("meter_credit", {}).get("outcome") == "applied"
                           and d["meter_credit"]["sent_balance_paise"] == 25_050)
            assert shown["balance_paise"] == 25_050 and shown["relay"] == "connected"
            assert shown["meter_credit"]["applied_balance_paise"] == 25_050
            text = node.jodo("meter", "show", ACCOUNT).stdout
            assert "meter's own credit" in text and "Rs 250.50" in text and "applied" in text, text
            until("the credit updates counted", lambda: (
                node.metric('jodo_meter_credit_updates_total{head_end="hes-cim",outcome="sent"}'),
                node.metric('jodo_meter_credit_updates_total{head_end="hes-cim",outcome="applied"}')),
                lambda counts: counts == (2.0, 2.0))
            assert node.metric('jodo_meter_credit_updates_total{head_end="hes-cim",outcome="failed"}') == 0
    finally:
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(20)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(10)
        sim_log.close()
