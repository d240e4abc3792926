"""Policy loading: sourced defaults, overrides, and clear errors naming the key."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from domain.errors import PolicyError
from domain.policy import load_policy


def test_defaults_load_with_the_sourced_values() -> None:
    p = load_policy()
    assert p.timezone == "Asia/Kolkata"
    assert p.billing_cashless_rebate_bp == 50  # MPERC 0.5 %
    assert p.disconnection_notice_clear_days == 15  # Electricity Act s.56(1)
    assert (p.disconnection_night_start, p.disconnection_night_end) == ("18:00", "08:00")  # UP
    assert p.disconnection_weekdays_off == ("sunday",)
    assert p.reconnection_threshold_paise == 0
    assert (p.relay_retry_base_seconds, p.relay_retry_multiplier, p.relay_max_attempts) == (30, 2, 3)
    assert (p.rollout_install_year_min, p.rollout_install_year_max) == (2020, 2024)  # Indore phase 1


def test_every_default_names_its_source_or_says_it_is_an_example() -> None:
    text = resources.files("domain").joinpath("policy_defaults.toml").read_text()
    comment: list[str] = []  # the comment block above the current key (keys may share one)
    fresh = True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment = [*comment, stripped] if fresh else [stripped]
            fresh = True
            continue
        if re.match(r"^[a-z_]+\s*=", stripped):
            block = " ".join(comment)
            assert "§" in block or "example: no public source" in block or "DESIGN" in block, stripped
            gap = "GAP" in block or "no public source" in block
            assert not gap or "example" in block, f"{stripped}: a GAP must be marked as an example"
            fresh = False
        elif not stripped or stripped.startswith("["):
            comment, fresh = [], True


def test_an_override_replaces_only_the_given_keys() -> None:
    p = load_policy('[billing]\nlate_surcharge_bp = 200\n[rollout]\nhead_ends = ["hes-a", "hes-b"]\n')
    assert p.billing_late_surcharge_bp == 200
    assert p.rollout_head_ends == ("hes-a", "hes-b")
    assert p.billing_cashless_rebate_bp == 50


def test_bare_toml_dates_are_accepted_as_holidays() -> None:
    p = load_policy("[disconnection]\nholidays = [2026-03-04]\n")
    assert p.disconnection_holidays == ("2026-03-04",)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[billing]\nrebate = 1\n", "billing.rebate"),
        ("colour = 1\n", "colour"),
        ("[billing.deep]\nx = 1\n", "billing.deep"),
        ('[billing]\ncashless_rebate_bp = "50"\n', "billing.cashless_rebate_bp"),
        ("[billing]\ncashless_rebate_bp = 0.5\n", "billing.cashless_rebate_bp"),
        ("[billing]\ncashless_rebate_bp = true\n", "billing.cashless_rebate_bp"),
        ("[billing]\nlate_surcharge_bp = 10001\n", "billing.late_surcharge_bp"),
        ("[disconnection]\nmin_dues_paise = -1\n", "disconnection.min_dues_paise"),
        ('[disconnection]\nnight_start = "6 PM"\n', "disconnection.night_start"),
        ('[disconnection]\nnight_end = "18:00"\n', "disconnection.night_end"),
        ('[disconnection]\nweekdays_off = ["funday"]\n', "disconnection.weekdays_off"),
        ('[disconnection]\nholidays = ["26/01/2026"]\n', "disconnection.holidays"),
        ("[reconnection]\nthreshold_paise = 50000\n", "reconnection.threshold_paise"),
        ("[relay]\nmax_attempts = 0\n", "relay.max_attempts"),
        ("[relay]\ncommand_expiry_seconds = 0\n", "relay.command_expiry_seconds"),
        ("[rollout]\ninstall_year_max = 2010\n", "rollout.install_year_max"),
        ("[rollout]\nhead_ends = []\n", "rollout.head_ends"),
        ('timezone = "Mars/Olympus"\n', "timezone"),
        ("[billing\n", "policy override"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(key)):
        load_policy(text)


def test_every_weekday_off_is_refused() -> None:
    days = '["monday","tuesday","wednesday","thursday","friday","saturday","sunday"]'
    with pytest.raises(PolicyError, match="weekdays_off"):
        load_policy(f"[disconnection]\nweekdays_off = {days}\n")


def test_policy_errors_are_value_errors() -> None:
    assert issubclass(PolicyError, ValueError)
