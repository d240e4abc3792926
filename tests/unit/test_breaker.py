"""The head-end circuit breaker: a pure state machine (closed → open → half-open → closed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headend.breaker import (
    Breaker,
    BreakerPhase,
    BreakerPolicy,
    breaker_allow,
    breaker_failure,
    breaker_retry_at,
    breaker_success,
)

POLICY = BreakerPolicy(failure_threshold=3, open_seconds=1.0, max_open_seconds=4.0, multiplier=2.0)


def fail_times(b: Breaker, n: int, now: float = 0.0) -> Breaker:
    for _ in range(n):
        b = breaker_failure(b, POLICY, now)
    return b


def test_a_closed_breaker_allows_requests_and_counts_consecutive_failures() -> None:
    b = fail_times(Breaker(), 2)
    assert b.phase is BreakerPhase.CLOSED and b.failures == 2
    allowed, b2 = breaker_allow(b, 0.0)
    assert allowed and b2 is b


def test_a_success_forgets_earlier_failures() -> None:
    b = breaker_success(fail_times(Breaker(), 2))
    assert b == Breaker()
    assert fail_times(b, 2).phase is BreakerPhase.CLOSED


def test_the_threshold_of_consecutive_failures_opens_it_for_the_cooldown() -> None:
    b = fail_times(Breaker(), 3, now=10.0)
    assert b.phase is BreakerPhase.OPEN and b.trips == 1
    assert breaker_retry_at(b) == 11.0
    allowed, same = breaker_allow(b, 10.999)
    assert not allowed and same is b


def test_after_the_cooldown_exactly_one_probe_goes_out() -> None:
    b = fail_times(Breaker(), 3, now=10.0)
    allowed, b = breaker_allow(b, 11.0)
    assert allowed and b.phase is BreakerPhase.HALF_OPEN and b.probing
    allowed, b = breaker_allow(b, 11.5)
    assert not allowed
    assert breaker_retry_at(b) is None  # waits on the probe, not on time


def test_a_successful_probe_closes_it() -> None:
    _, b = breaker_allow(fail_times(Breaker(), 3), 5.0)
    b = breaker_success(b)
    assert b.phase is BreakerPhase.CLOSED and b.failures == 0 and b.trips == 1


def test_a_failed_probe_reopens_it_for_longer_up_to_the_cap() -> None:
    b = fail_times(Breaker(), 3, now=0.0)
    cooldowns = []
    now = 0.0
    for _ in range(5):
        now = b.open_until
        _, b = breaker_allow(b, now)
        b = breaker_failure(b, POLICY, now)
        cooldowns.append(b.cooldown)
        assert b.phase is BreakerPhase.OPEN
    assert cooldowns == [2.0, 4.0, 4.0, 4.0, 4.0]
    assert b.trips == 1  # one trip, several failed probes


def test_a_late_failure_while_open_changes_nothing() -> None:
    b = fail_times(Breaker(), 3, now=0.0)
    assert breaker_failure(b, POLICY, 0.5) is b


def test_a_closing_breaker_restarts_its_cooldown_from_the_first_step() -> None:
    b = fail_times(Breaker(), 3)
    _, b = breaker_allow(b, 1.0)
    b = breaker_failure(b, POLICY, 1.0)  # cooldown 2
    _, b = breaker_allow(b, 3.0)
    b = breaker_success(b)
    b = fail_times(b, 3, now=10.0)
    assert b.cooldown == POLICY.open_seconds and b.trips == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"open_seconds": 0.0},
        {"open_seconds": 5.0, "max_open_seconds": 1.0},
        {"multiplier": 0.5},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]


def test_only_a_half_open_breaker_may_have_a_probe_out() -> None:
    with pytest.raises(ValueError):
        Breaker(phase=BreakerPhase.OPEN, probing=True)


@given(st.lists(st.sampled_from(["ok", "fail", "ask"]), max_size=60))
def test_while_open_no_request_is_allowed_before_its_cooldown_ends(events: list[str]) -> None:
    b = Breaker()
    now = 0.0
    for event in events:
        now += 0.3
        if event == "ok":
            b = breaker_success(b)
        elif event == "fail":
            b = breaker_failure(b, POLICY, now)
        else:
            before = b
            allowed, b = breaker_allow(b, now)
            if before.phase is BreakerPhase.OPEN:
                assert allowed == (now >= before.open_until)
            if before.phase is BreakerPhase.HALF_OPEN:
                assert allowed != before.probing
        assert b.cooldown <= POLICY.max_open_seconds
