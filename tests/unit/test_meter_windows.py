"""Local-calendar arithmetic: due dates, clear days, no-disconnection windows (research §3)."""

from __future__ import annotations

from test_meter_support import POLICY, at

from domain.policy import load_policy
from domain.windows import (
    allowed_until,
    disconnection_allowed,
    due_at_for,
    next_allowed_at,
    notice_matures_at,
)


def test_a_due_date_is_on_time_until_local_midnight_ending_it() -> None:
    assert due_at_for("2025-03-10", POLICY) == at(2025, 3, 11)
    assert due_at_for("2025-12-31", POLICY) == at(2026, 1, 1)


def test_fifteen_clear_days_exclude_the_serving_and_the_action_day() -> None:
    assert notice_matures_at(at(2025, 3, 11, 0), POLICY) == at(2025, 3, 27)
    assert notice_matures_at(at(2025, 3, 11, 23, 59), POLICY) == at(2025, 3, 27)


def test_allowed_hours_are_eight_to_six_on_working_days() -> None:
    thursday = (2025, 3, 27)
    assert not disconnection_allowed(at(*thursday, 7, 59, 59), POLICY)
    assert disconnection_allowed(at(*thursday, 8), POLICY)
    assert disconnection_allowed(at(*thursday, 17, 59, 59), POLICY)
    assert not disconnection_allowed(at(*thursday, 18), POLICY)
    assert not disconnection_allowed(at(2025, 3, 30, 12), POLICY)  # Sunday
    assert not disconnection_allowed(at(2025, 8, 15, 12), POLICY)  # Independence Day


def test_next_allowed_skips_nights_sundays_and_holidays() -> None:
    assert next_allowed_at(at(2025, 3, 27, 19), POLICY) == at(2025, 3, 28, 8)
    assert next_allowed_at(at(2025, 3, 29, 18, 30), POLICY) == at(2025, 3, 31, 8)  # Saturday night
    # Republic Day 2025 is a Sunday; Gandhi Jayanti 2025 a Thursday.
    assert next_allowed_at(at(2025, 10, 1, 20), POLICY) == at(2025, 10, 3, 8)
    assert next_allowed_at(at(2025, 3, 27, 10), POLICY) == at(2025, 3, 27, 10)


def test_allowed_until_is_the_end_of_the_current_allowed_period() -> None:
    assert allowed_until(at(2025, 3, 27, 10), POLICY) == at(2025, 3, 27, 18)
    assert allowed_until(at(2025, 3, 27, 20), POLICY) == at(2025, 3, 27, 20)


def test_a_window_inside_the_day_is_supported() -> None:
    # Kerala-style: disconnections only until 1 PM (research §3.2): window 13:00-08:00.
    kerala = load_policy('[disconnection]\nnight_start = "13:00"\nnight_end = "08:00"\n')
    assert disconnection_allowed(at(2025, 3, 27, 12, 59), kerala)
    assert not disconnection_allowed(at(2025, 3, 27, 13), kerala)
    lunch = load_policy('[disconnection]\nnight_start = "13:00"\nnight_end = "14:00"\n')
    assert disconnection_allowed(at(2025, 3, 27, 2), lunch)
    assert not disconnection_allowed(at(2025, 3, 27, 13, 30), lunch)
    assert next_allowed_at(at(2025, 3, 27, 13, 30), lunch) == at(2025, 3, 27, 14)
