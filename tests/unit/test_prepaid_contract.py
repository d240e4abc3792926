"""The prepaid contract (issue 16, docs/prepaid-contract.md) as the node sees it today: the three
commands decode, are injectable with their help text, and a meter refuses each cleanly (a rejection
naming the command and its id, no event, no state change) until the meter core runs prepaid meters."""

from __future__ import annotations

import pytest

from domain.commands import RegisterMeter, ReportConsumption, RequestEmergencyCredit, SetBillingMode
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
def test_a_prepaid_command_is_refused_cleanly_for_now(command: object) -> None:
    meter, _, _ = handle(None, RegisterMeter(account="N1", serial="S1", head_end="hes-a", install_year=2022,
                                             relay_capable=True, control_mode=2), T0, POLICY)
    after, events, effects = handle(meter, command, T0 + 1, POLICY)  # type: ignore[arg-type]
    assert after == meter and events == ()
    assert len(effects) == 1 and isinstance(effects[0], MeterCommandRejected)
    assert effects[0].command == type(command).__name__ and "issue 16" in effects[0].reason
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
