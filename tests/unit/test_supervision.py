"""The pure OTP supervision policy, case by case against supervisor.erl's semantics."""

from __future__ import annotations

import random

import pytest

from domain.supervision import (
    AutoShutdown,
    ChildSpec,
    ExitReason,
    InitFactory,
    IntensityExceeded,
    Restart,
    RestartPlan,
    Strategy,
    SupervisorFlags,
    add_restart,
    auto_shutdown_triggered,
    backoff_delay,
    children_to_restart,
    restart_plan,
    should_restart,
)


def _spec(cid: str, restart: Restart = Restart.PERMANENT, significant: bool = False) -> ChildSpec:
    return ChildSpec(id=cid, start="supervisors.testing.CrashableWorker", restart=restart,
                     significant=significant)


SPECS = (_spec("a"), _spec("b"), _spec("c"), _spec("d"))


# ------------------------------------------------------------------ restart types


@pytest.mark.parametrize(
    ("restart", "reason", "expected"),
    [
        (Restart.PERMANENT, ExitReason.NORMAL, True),
        (Restart.PERMANENT, ExitReason.SHUTDOWN, True),
        (Restart.PERMANENT, ExitReason.ABNORMAL, True),
        (Restart.TRANSIENT, ExitReason.NORMAL, False),
        (Restart.TRANSIENT, ExitReason.SHUTDOWN, False),
        (Restart.TRANSIENT, ExitReason.ABNORMAL, True),
        (Restart.TEMPORARY, ExitReason.NORMAL, False),
        (Restart.TEMPORARY, ExitReason.SHUTDOWN, False),
        (Restart.TEMPORARY, ExitReason.ABNORMAL, False),
    ],
)
def test_restart_type_decides_whether_an_exit_is_restarted(
    restart: Restart, reason: ExitReason, expected: bool
) -> None:
    assert should_restart(restart, reason) is expected


# ------------------------------------------------------------------ intensity / period


def test_restarts_within_intensity_are_allowed_and_recorded() -> None:
    flags = SupervisorFlags(intensity=3, period=10.0)
    r = add_restart((), 100.0, flags)
    r = add_restart(r, 101.0, flags) if not isinstance(r, IntensityExceeded) else r
    r = add_restart(r, 102.0, flags) if not isinstance(r, IntensityExceeded) else r
    assert r == (100.0, 101.0, 102.0)


def test_one_restart_too_many_within_the_period_escalates() -> None:
    flags = SupervisorFlags(intensity=2, period=10.0)
    result = add_restart((100.0, 105.0), 109.0, flags)
    assert isinstance(result, IntensityExceeded)
    assert result.restarts == (100.0, 105.0, 109.0)
    assert (result.intensity, result.period) == (2, 10.0)


def test_the_window_slides_so_old_restarts_stop_counting() -> None:
    flags = SupervisorFlags(intensity=2, period=10.0)
    # 100.0 left the window (111 - 10 = 101 > 100): only 105 and 111 count
    assert add_restart((100.0, 105.0), 111.0, flags) == (105.0, 111.0)


def test_a_restart_exactly_one_period_old_still_counts() -> None:
    # supervisor.erl keeps R >= Now - Period
    flags = SupervisorFlags(intensity=1, period=5.0)
    assert isinstance(add_restart((10.0,), 15.0, flags), IntensityExceeded)
    assert add_restart((10.0,), 15.5, flags) == (15.5,)


def test_intensity_zero_allows_no_restart_at_all() -> None:
    assert isinstance(add_restart((), 0.0, SupervisorFlags(intensity=0)), IntensityExceeded)


def test_default_flags_mirror_otp_one_restart_in_five_seconds() -> None:
    flags = SupervisorFlags()
    assert (flags.strategy, flags.intensity, flags.period) == (Strategy.ONE_FOR_ONE, 1, 5.0)
    first = add_restart((), 0.0, flags)
    assert first == (0.0,)
    assert isinstance(add_restart((0.0,), 4.0, flags), IntensityExceeded)


def test_a_crash_loop_escalates_after_intensity_plus_one_failures() -> None:
    flags = SupervisorFlags(intensity=3, period=60.0)
    restarts: tuple[float, ...] = ()
    outcomes = []
    for i in range(5):
        result = add_restart(restarts, float(i), flags)
        outcomes.append(isinstance(result, IntensityExceeded))
        if isinstance(result, IntensityExceeded):
            break
        restarts = result
    assert outcomes == [False, False, False, True]


# ------------------------------------------------------------------ strategies


def test_one_for_one_restarts_only_the_failed_child() -> None:
    assert children_to_restart(SPECS, "b", Strategy.ONE_FOR_ONE) == ("b",)
    assert restart_plan(SPECS, "b", Strategy.ONE_FOR_ONE) == RestartPlan(stop=(), start=("b",))


def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it() -> None:
    assert children_to_restart(SPECS, "b", Strategy.REST_FOR_ONE) == ("b", "c", "d")
    plan = restart_plan(SPECS, "b", Strategy.REST_FOR_ONE)
    assert plan.stop == ("d", "c")  # reverse start order, the failed one is already gone
    assert plan.start == ("b", "c", "d")  # start order


def test_rest_for_one_on_the_last_child_touches_nobody_else() -> None:
    assert restart_plan(SPECS, "d", Strategy.REST_FOR_ONE) == RestartPlan(stop=(), start=("d",))


def test_one_for_all_stops_in_reverse_start_order_and_restarts_in_start_order() -> None:
    assert children_to_restart(SPECS, "c", Strategy.ONE_FOR_ALL) == ("a", "b", "c", "d")
    plan = restart_plan(SPECS, "c", Strategy.ONE_FOR_ALL)
    assert plan.stop == ("d", "b", "a")
    assert plan.start == ("a", "b", "c", "d")


def test_a_temporary_sibling_stopped_for_a_restart_is_not_started_again() -> None:
    specs = (_spec("a"), _spec("t", Restart.TEMPORARY), _spec("x", Restart.TRANSIENT), _spec("c"))
    plan = restart_plan(specs, "a", Strategy.ONE_FOR_ALL)
    assert plan.stop == ("c", "x", "t")
    assert plan.start == ("a", "x", "c")  # transient siblings come back, temporary ones do not


def test_an_unknown_child_id_is_a_bug() -> None:
    with pytest.raises(KeyError):
        children_to_restart(SPECS, "zz", Strategy.ONE_FOR_ONE)


# ------------------------------------------------------------------ auto_shutdown


def test_auto_shutdown_never_ignores_significant_children() -> None:
    specs = (_spec("s", Restart.TRANSIENT, significant=True), _spec("w"))
    assert not auto_shutdown_triggered(SupervisorFlags(), specs, "s", ("w",))


def test_any_significant_child_ending_ends_the_supervisor() -> None:
    flags = SupervisorFlags(auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    specs = (_spec("s1", Restart.TRANSIENT, True), _spec("s2", Restart.TEMPORARY, True), _spec("w"))
    assert auto_shutdown_triggered(flags, specs, "s1", ("s2", "w"))
    assert not auto_shutdown_triggered(flags, specs, "w", ("s1", "s2"))


def test_all_significant_waits_for_the_last_significant_child() -> None:
    flags = SupervisorFlags(auto_shutdown=AutoShutdown.ALL_SIGNIFICANT)
    specs = (_spec("s1", Restart.TRANSIENT, True), _spec("s2", Restart.TEMPORARY, True), _spec("w"))
    assert not auto_shutdown_triggered(flags, specs, "s1", ("s2", "w"))
    assert auto_shutdown_triggered(flags, specs, "s2", ("w",))


# ------------------------------------------------------------------ specs and flags


def test_a_permanent_child_cannot_be_significant() -> None:
    with pytest.raises(ValueError, match="significant"):
        _spec("p", Restart.PERMANENT, significant=True)


def test_a_child_spec_names_an_importable_class_path() -> None:
    with pytest.raises(ValueError, match="start"):
        ChildSpec(id="x", start="NoModule")
    assert _spec("x").kind == "CrashableWorker"


def test_an_init_factory_names_module_and_function() -> None:
    assert InitFactory(path="supervisors.testing:worker_init").path.endswith("worker_init")
    with pytest.raises(ValueError):
        InitFactory(path="supervisors.testing.worker_init")


def test_flags_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        SupervisorFlags(intensity=-1)
    with pytest.raises(ValueError):
        SupervisorFlags(period=0)
    with pytest.raises(ValueError):
        SupervisorFlags(backoff_base=2.0, backoff_cap=1.0)


# ------------------------------------------------------------------ backoff


def test_backoff_is_deterministic_for_a_seed() -> None:
    first = [backoff_delay(n, 0.1, 5.0, random.Random(7)) for n in range(8)]
    again = [backoff_delay(n, 0.1, 5.0, random.Random(7)) for n in range(8)]
    assert first == again


def test_backoff_stays_between_half_and_all_of_a_doubling_capped_ceiling() -> None:
    rng = random.Random(42)
    for attempt in range(0, 200):
        ceiling = min(5.0, 0.1 * 2**min(attempt, 64))
        for _ in range(20):
            delay = backoff_delay(attempt, 0.1, 5.0, rng)
            assert ceiling / 2 <= delay <= ceiling


def test_backoff_jitter_actually_spreads_restarts() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay(3, 0.1, 5.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_zero_base_restarts_at_once_like_otp() -> None:
    assert backoff_delay(10, 0.0, 5.0, random.Random(0)) == 0.0


def test_a_negative_attempt_is_a_bug() -> None:
    with pytest.raises(ValueError):
        backoff_delay(-1, 0.1, 1.0, random.Random(0))
