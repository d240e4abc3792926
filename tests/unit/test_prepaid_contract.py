"""The prepaid contract (issue 16, docs/prepaid-contract.md): the three commands decode, are injectable
with their help text, and are refused cleanly for an unknown meter (what a meter does with them:
tests/unit/test_meter_prepaid.py)."""

from __future__ import annotations

import pytest

from domain.commands import ReportConsumption, RequestEmergencyCredit, SetBillingMode
from domain.effects import MeterCommandRejected
from domain.enums import BillingMode
from domain.meter import handle
from domain.policy import load_policy
from jodo.schema import message_schema
from protocols import codec

POLICY = load_policy()
T0 = 1_796_000_000
COMMANDS = [
    SetBillingMode(account="N1", mode=BillingMode.PREPAID, opening_balance_paise=50_000, request_id="r1"),
    ReportConsumption(account="N1", read_id="S1:2026-12-01", read_date="2026-12-01", energy_wh=4_250),
    RequestEmergencyCredit(account="N1", request_id="ec1"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_a_prepaid_command_for_an_unknown_meter_is_refused_cleanly(command: object) -> None:
    after, events, effects = handle(None, command, T0, POLICY)  # type: ignore[arg-type]
    assert after is None and events == ()
    assert len(effects) == 1 and isinstance(effects[0], MeterCommandRejected)
    assert effects[0].command == type(command).__name__ and effects[0].reason == "no such meter"
    assert codec.decode(codec.encode(command)) == command


@pytest.mark.parametrize("tag", ["SetBillingMode", "ReportConsumption", "RequestEmergencyCredit"])
def test_the_prepaid_commands_are_injectable_with_help(tag: str) -> None:
    doc = message_schema(tag).to_json()
    assert doc["routed_to"] == "the meter's shard" and doc["summary"]


def test_bad_reads_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="energy_wh"):
        ReportConsumption(account="N1", read_id="r", read_date="2026-12-01", energy_wh=-1)
    with pytest.raises(ValueError, match="read_date"):
        ReportConsumption(account="N1", read_id="r", read_date="1 Dec", energy_wh=1)
    with pytest.raises(ValueError, match="interval"):
        ReportConsumption(account="N1", read_id="r", read_date="2026-12-01", energy_wh=1, interval_start=5)
    with pytest.raises(codec.CodecError, match="energy_wh"):
        codec.from_fields("ReportConsumption", {"account": "N1", "read_id": "r", "read_date": "2026-12-01",
                                                "energy_wh": 1.5})
