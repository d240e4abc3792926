"""Messages describe themselves (jodo.schema) and typed-in values parse one way (jodo.values)."""

from __future__ import annotations

import shlex

import pytest

import protocols  # noqa: F401  (registers the domain records)
from domain.commands import PostBill, RegisterMeter
from jodo import schema
from jodo.values import BadValue, parse_bool, parse_date, parse_datetime, parse_paise

NOW = 1_796_650_000


def test_register_meter_takes_policy_and_config_defaults_and_says_so() -> None:
    built = schema.build("RegisterMeter", {"account": "N0000000001", "serial": "MPW00000001",
                                           "install_year": "2022"}, head_ends=["hes-sim"], now=NOW)
    assert isinstance(built.message, RegisterMeter)
    m = built.message
    assert (m.head_end, m.relay_capable, m.control_mode) == ("hes-sim", True, 2)
    assert built.defaults_used == (("head_end", "hes-sim", "config"), ("relay_capable", True, "policy"),
                                   ("control_mode", 2, "policy"))


def test_dates_and_money_are_written_as_people_write_them() -> None:
    built = schema.build("PostBill", {"account": "N1", "bill_id": "B1", "amount_paise": "150000",
                                      "due_date": "2026-12-21", "issued_at": "2026-12-01"}, now=NOW)
    assert isinstance(built.message, PostBill)
    assert built.message.due_date == "2026-12-21" and built.message.issued_at == 1_796_063_400


@pytest.mark.parametrize(("fields", "field"), [
    ({"amount_paise": "1500.00"}, "amount_paise"),
    ({"due_date": "21/12/2026"}, "due_date"),
    ({"issued_at": "yesterday"}, "issued_at"),
    ({"bill_id": ""}, "bill_id"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_value_names_its_field_and_an_accepted_example(fields: dict[str, str], field: str) -> None:
    good = {"account": "N1", "bill_id": "B1", "amount_paise": "150000", "due_date": "2026-12-21",
            "issued_at": "2026-12-01"}
    with pytest.raises(schema.FieldError) as caught:
        schema.build("PostBill", {**good, **fields}, now=NOW)
    assert caught.value.field == field
    assert f"PostBill.{field}" in str(caught.value)


def test_every_injectable_message_has_a_schema_and_its_example_builds() -> None:
    for s in schema.injectable_schemas(head_ends=["hes-sim"], now=NOW):
        assert s.fields and s.summary
        pairs = dict(word.split("=", 1) for word in shlex.split(s.example)[4:])
        schema.build(s.type, pairs, head_ends=["hes-sim"], now=NOW)


def test_unknown_and_internal_messages_are_refused() -> None:
    with pytest.raises(schema.FieldError, match="unknown message type"):
        schema.message_schema("Nope")
    with pytest.raises(schema.FieldError, match="not injectable"):
        schema.message_schema("MeterRegistered")


def test_value_rules() -> None:
    values = ("true", "No", "1", "0", "yes", False)
    assert [parse_bool(v) for v in values] == [True, False, True, False, True, False]
    assert parse_paise("150000") == 150000
    with pytest.raises(BadValue, match="12050 paise"):
        parse_paise("120.50")
    assert parse_date("2026-12-21").isoformat() == "2026-12-21"
    assert parse_datetime("2026-12-01T00:00+00:00") == 1_796_083_200
    with pytest.raises(BadValue):
        parse_bool("maybe")


def test_the_readme_example_registers_a_meter_already_off_for_dues() -> None:
    """README, "A meter that is already off for dues": the inject line as typed builds that meter."""
    from pathlib import Path

    from domain.enums import RelayState

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    line = ("account=N3462019771 serial=MPW00012345 install_year=2022 \\\n"
            "    relay=disconnected opening_dues_paise=150000")
    assert line in readme
    fields = dict(pair.split("=", 1) for pair in line.replace("\\\n", " ").split())
    built = schema.build("RegisterMeter", fields, head_ends=["hes-sim"])
    assert isinstance(built.message, RegisterMeter)
    assert (built.message.relay, built.message.opening_dues_paise) == (RelayState.DISCONNECTED, 150_000)
