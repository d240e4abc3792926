"""`jodo meter show` / `history` text for prepaid meters (docs shaped as docs/prepaid-contract.md says)."""

from __future__ import annotations

from typing import Any

from jodo.cli import _history_text, _meter_text

METER: dict[str, Any] = {
    "account": "N0000000001", "serial": "MPW00000001", "relay": "connected", "desired": "connected",
    "dues_paise": 150_000, "head_end": "hes-sim", "install_year": 2022, "relay_capable": True,
    "control_mode": 2, "protected": False, "on_hold": False,
}
DEBIT = {"event": "ConsumptionDebited", "at": 1_717_000_000, "read_id": "MPW00000001:2024-05-28",
         "read_date": "2024-05-28", "energy_wh": 8_250, "debit_paise": 6_931, "balance_after_paise": 43_069,
         "estimated": False, "replaces": None}


def test_a_postpaid_meter_still_shows_its_dues() -> None:
    text = _meter_text(METER)
    assert "dues" in text and "Rs 1,500.00" in text and "balance" not in text


def test_a_prepaid_meter_shows_its_balance_emergency_credit_and_recent_debits() -> None:
    doc = {**METER, "billing_mode": "prepaid", "dues_paise": -43_069, "emergency_credit_paise": 5_000,
           "recent_debits": [DEBIT]}
    text = _meter_text(doc)
    assert "prepaid balance" in text and "Rs 430.69" in text
    assert "emergency credit Rs 50.00 outstanding" in text
    assert "recent reads, debits and recharges" in text
    assert "read_id=MPW00000001:2024-05-28" in text and "energy_wh=8.250kWh" in text
    assert "debit_paise=Rs 69.31" in text and "balance_after_paise=Rs 430.69" in text
    assert "estimated" not in text  # a false flag is not shown


def test_a_negative_balance_and_a_zero_energy_day_are_shown_not_hidden() -> None:
    doc = {**METER, "billing_mode": "prepaid", "dues_paise": 1_250}
    assert "-Rs 12.50" in _meter_text(doc)
    estimate = {**DEBIT, "energy_wh": 0, "estimated": True}
    history = _history_text({"account": "N0000000001", "events": [estimate]})
    assert "energy_wh=0.000kWh" in history and "estimated=True" in history
