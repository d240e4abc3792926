"""The simulated head-end without sockets: class-70 semantics, the fleet, and `SimCore` behaviour."""

from __future__ import annotations

import pytest

from headend.sim.config import LatencySpec, SimConfig
from headend.sim.core import SimCore
from headend.sim.fleet import Fleet, button_transition, remote_transition
from protocols.headend import (
    HesAction,
    HesBatchAccepted,
    HesBatchRejected,
    HesCommand,
    HesCommandResult,
    HesControlState,
    HesError,
    HesFrame,
    HesHeartbeat,
    HesHello,
    HesInspect,
    HesInspection,
    HesPressButton,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
)

D, C, R = 0, 1, 2  # disconnected, connected, ready_for_reconnection
T0 = 1_700_000_000.0


# --- class 70 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [2, 4])
def test_remote_reconnect_goes_straight_to_connected_in_modes_2_and_4(mode: int) -> None:
    assert remote_transition(D, mode, HesAction.CONNECT) == (C, None)


@pytest.mark.parametrize("mode", [1, 3, 5, 6])
def test_remote_reconnect_stops_at_ready_for_reconnection_in_modes_1_3_5_6(mode: int) -> None:
    assert remote_transition(D, mode, HesAction.CONNECT) == (R, None)
    assert remote_transition(R, mode, HesAction.CONNECT) == (R, None)  # still waits for the button


@pytest.mark.parametrize("mode", range(1, 7))
def test_remote_disconnect_opens_from_connected_and_from_ready(mode: int) -> None:
    assert remote_transition(C, mode, HesAction.DISCONNECT) == (D, None)
    assert remote_transition(R, mode, HesAction.DISCONNECT) == (D, None)
    assert remote_transition(D, mode, HesAction.DISCONNECT) == (D, None)


def test_mode_0_cannot_be_switched() -> None:
    assert remote_transition(C, 0, HesAction.DISCONNECT) == (C, "not_permitted")
    assert remote_transition(C, 0, HesAction.CONNECT) == (C, None)
    assert button_transition(C, 0) == C


@pytest.mark.parametrize("mode", range(1, 7))
def test_the_button_closes_a_meter_ready_for_reconnection(mode: int) -> None:
    assert button_transition(R, mode) == C


@pytest.mark.parametrize(("mode", "after"), [(1, R), (2, R), (5, R), (3, C), (4, C), (6, C)])
def test_the_button_opens_a_connected_meter_only_where_manual_disconnect_is_allowed(
    mode: int, after: int
) -> None:
    assert button_transition(C, mode) == after


def test_reads_change_nothing() -> None:
    for state in (D, C, R):
        assert remote_transition(state, 1, HesAction.READ) == (state, None)


# --- fleet -------------------------------------------------------------------------------------


def test_serials_map_to_indexes_and_unknown_serials_to_none() -> None:
    fleet = Fleet(1000)
    assert fleet.serial(42) == "MPW00000042"
    assert fleet.index("MPW00000042") == 42
    for bad in (
        "MPW00001000",
        "MPW0000042",
        "XYZ00000042",
        "MPW0000004x",
        "MPW" + "\u0660" * 6 + "\u0664\u0662",
        "",
    ):
        assert fleet.index(bad) is None
    assert fleet.state("nope").control_state is None


def test_control_mode_cohorts_and_initial_states_follow_the_seed() -> None:
    a = Fleet(10_000, modes=((2, 0.8), (1, 0.2)), disconnected_fraction=0.3, seed=5)
    b = Fleet(10_000, modes=((2, 0.8), (1, 0.2)), disconnected_fraction=0.3, seed=5)
    c = Fleet(10_000, modes=((2, 0.8), (1, 0.2)), disconnected_fraction=0.3, seed=6)
    assert a.control_mode == b.control_mode and a.control_state == b.control_state
    assert a.control_mode != c.control_mode
    assert 1500 < a.control_mode.count(1) < 2500
    assert 2500 < a.count(HesControlState.DISCONNECTED) < 3500


def test_mode_0_meters_start_connected_whatever_the_fraction() -> None:
    fleet = Fleet(100, modes=((0, 1.0),), disconnected_fraction=1.0)
    assert fleet.count(HesControlState.CONNECTED) == 100


def test_a_fleet_of_named_serials_works_like_a_numbered_one() -> None:
    fleet = Fleet.from_serials(["A", "B"], mode=1, control_state=D)
    assert fleet.index("B") == 1 and fleet.index("C") is None
    i = fleet.index("A")
    assert i is not None
    assert fleet.apply(i, HesAction.CONNECT) == (R, None)
    assert fleet.press_button("A").control_state is HesControlState.CONNECTED


def test_a_meter_costs_three_bytes_or_less() -> None:
    fleet = Fleet(100_000, disconnected_fraction=0.5)
    assert len(fleet.control_state) + len(fleet.control_mode) <= 3 * 100_000


# --- SimCore -----------------------------------------------------------------------------------


def cmd(cid: str, meter: int, action: HesAction = HesAction.CONNECT, expires: float = T0 + 60) -> HesCommand:
    return HesCommand(cid, f"MPW{meter:08d}", action, expires)


def session(config: SimConfig, now: float = T0) -> tuple[SimCore, int]:
    core = SimCore(config, now)
    sid = core.open_session(now)
    welcome = core.handle(sid, HesHello(client="t"), now)
    assert isinstance(welcome[0], HesWelcome)
    return core, sid


def results_of(frames: dict[int, list[HesFrame]], sid: int) -> list[HesCommandResult]:
    return [r for f in frames.get(sid, []) if isinstance(f, HesResults) for r in f.results]


def run_until(core: SimCore, sid: int, until: float, step: float = 0.01) -> list[HesCommandResult]:
    out: list[HesCommandResult] = []
    t = core.started_at
    while t <= until:
        out += results_of(core.on_tick(t).frames, sid)
        t += step
    return out


def test_hello_is_answered_with_the_limits_and_unknown_versions_are_fatal() -> None:
    core = SimCore(SimConfig(meters=10, rate_limit=5, max_batch=7), T0)
    sid = core.open_session(T0)
    (welcome,) = core.handle(sid, HesHello(client="t"), T0)
    assert welcome == HesWelcome(
        version=1, server="jodo-hes-sim", max_batch=7, rate_limit=5.0, max_frame_bytes=welcome.max_frame_bytes
    )
    (err,) = core.handle(core.open_session(T0), HesHello(client="t", versions=(9,)), T0)
    assert isinstance(err, HesError) and err.fatal and err.code == "unsupported_version"


def test_a_submit_before_hello_gets_a_non_fatal_error() -> None:
    core = SimCore(SimConfig(meters=10), T0)
    sid = core.open_session(T0)
    (err,) = core.handle(sid, HesSubmit(batch_id=3, commands=(cmd("a", 1),)), T0)
    assert isinstance(err, HesError) and not err.fatal and err.batch_id == 3


def test_heartbeats_are_echoed() -> None:
    core, sid = session(SimConfig(meters=10))
    assert core.handle(sid, HesHeartbeat(seq=9), T0) == [HesHeartbeat(seq=9)]


def test_with_no_faults_a_command_runs_at_once_and_reports_the_relay() -> None:
    core, sid = session(SimConfig(meters=10, disconnected_fraction=1.0))
    (ack,) = core.handle(sid, HesSubmit(batch_id=1, commands=(cmd("a", 1), cmd("b", 2, HesAction.READ))), T0)
    assert ack == HesBatchAccepted(batch_id=1)
    a, b = results_of(core.take_results(), sid)
    assert (a.command_id, a.status, a.control_state, a.output_state) == (
        "a",
        HesResultStatus.PROCESSED,
        HesControlState.CONNECTED,
        True,
    )
    assert (b.control_state, b.output_state, b.control_mode) == (HesControlState.DISCONNECTED, False, 2)
    assert core.fleet.state("MPW00000001").control_state is HesControlState.CONNECTED


def test_unknown_meters_and_commands_already_expired_are_rejected_per_command() -> None:
    core, sid = session(SimConfig(meters=10))
    commands = (cmd("ok", 1), cmd("unknown", 99), cmd("late", 2, expires=T0))
    (ack,) = core.handle(sid, HesSubmit(batch_id=1, commands=commands), T0)
    assert isinstance(ack, HesBatchAccepted)
    assert {(r.command_id, r.reason) for r in ack.rejected} == {
        ("unknown", "unknown_meter"),
        ("late", "expired"),
    }


def test_a_command_that_would_execute_after_its_expiry_never_runs_and_reports_expired() -> None:
    config = SimConfig(meters=10, disconnected_fraction=1.0, latency=LatencySpec("fixed", (2.0,)))
    core, sid = session(config)
    core.handle(sid, HesSubmit(batch_id=1, commands=(cmd("a", 1, expires=T0 + 1.0), cmd("b", 2))), T0)
    results = {r.command_id: r for r in run_until(core, sid, T0 + 2.5)}
    assert results["a"].status is HesResultStatus.EXPIRED
    assert core.fleet.state("MPW00000001").control_state is HesControlState.DISCONNECTED
    assert results["b"].status is HesResultStatus.PROCESSED
    assert core.stats.expired == 1


def test_the_rate_limit_rejects_switching_commands_beyond_the_bucket_and_refills() -> None:
    core, sid = session(SimConfig(meters=100, rate_limit=10, rate_burst=1.0))
    (ack,) = core.handle(sid, HesSubmit(batch_id=1, commands=tuple(cmd(f"c{i}", i) for i in range(15))), T0)
    assert isinstance(ack, HesBatchAccepted)
    assert [r.reason for r in ack.rejected] == ["rate_limited"] * 5
    (ack,) = core.handle(sid, HesSubmit(batch_id=2, commands=(cmd("x", 50),)), T0)
    assert isinstance(ack, HesBatchRejected) and ack.reason == "rate_limited"
    (ack,) = core.handle(sid, HesSubmit(batch_id=3, commands=(cmd("y", 51),)), T0 + 0.2)
    assert ack == HesBatchAccepted(batch_id=3)


def test_reads_have_their_own_rate_limit() -> None:
    core, sid = session(SimConfig(meters=100, rate_limit=1, read_rate_limit=0))
    reads = tuple(cmd(f"r{i}", i, HesAction.READ) for i in range(50))
    assert core.handle(sid, HesSubmit(batch_id=1, commands=reads), T0) == [HesBatchAccepted(batch_id=1)]


def test_a_batch_larger_than_max_batch_is_rejected_whole() -> None:
    core, sid = session(SimConfig(meters=100, max_batch=3))
    (ack,) = core.handle(sid, HesSubmit(batch_id=1, commands=tuple(cmd(f"c{i}", i) for i in range(4))), T0)
    assert isinstance(ack, HesBatchRejected) and ack.reason == "malformed"


def faulty(seed: int) -> SimConfig:
    return SimConfig(
        meters=5000,
        seed=seed,
        disconnected_fraction=1.0,
        latency=LatencySpec("uniform", (0.0, 0.5)),
        failure_rate=0.1,
        drop_rate=0.1,
        duplicate_rate=0.1,
        reorder_rate=0.3,
        misreport_rate=0.05,
    )


def faulty_run(seed: int) -> list[HesCommandResult]:
    core, sid = session(faulty(seed))
    core.handle(sid, HesSubmit(batch_id=1, commands=tuple(cmd(f"c{i}", i) for i in range(2000))), T0)
    return run_until(core, sid, T0 + 1.0, step=0.05)


def test_the_same_seed_gives_the_same_fates_and_another_seed_others() -> None:
    assert faulty_run(1) == faulty_run(1)
    assert faulty_run(1) != faulty_run(2)


def test_fault_rates_come_out_near_their_knobs() -> None:
    results = faulty_run(3)
    ids = [r.command_id for r in results]
    distinct = set(ids)
    assert 1700 < len(distinct) < 1900  # ~10 % dropped
    assert 150 < len(ids) - len(distinct) < 250  # ~10 % duplicated
    errors = [r for r in results if r.status is HesResultStatus.ERROR]
    assert 150 < len({r.command_id for r in errors}) < 250
    assert {r.error for r in errors} <= {"no_communication", "relay_stuck", "load_side_voltage_present"}
    assert ids != sorted(ids, key=lambda c: int(c[1:]))  # out of order


def test_a_failed_command_changes_nothing_and_a_misreported_one_only_claims_to() -> None:
    core, sid = session(faulty(4))
    core.handle(sid, HesSubmit(batch_id=1, commands=tuple(cmd(f"c{i}", i) for i in range(2000))), T0)
    results = run_until(core, sid, T0 + 1.0, step=0.05)
    for r in results:
        actual = core.fleet.state(r.meter).control_state
        if r.status is HesResultStatus.ERROR:
            assert actual is HesControlState.DISCONNECTED
    claimed = sum(1 for r in results if r.status is HesResultStatus.PROCESSED and r.control_state == C)
    really = core.fleet.count(HesControlState.CONNECTED)
    assert core.stats.misreported > 0
    assert really == core.stats.executed
    assert claimed > really - core.stats.dropped  # some claims are lies


def test_slow_start_defers_execution_until_warm() -> None:
    core, sid = session(SimConfig(meters=10, disconnected_fraction=1.0, slow_start=1.0))
    assert core.handle(sid, HesSubmit(batch_id=1, commands=(cmd("a", 1),)), T0) == [
        HesBatchAccepted(batch_id=1)
    ]
    assert results_of(core.on_tick(T0 + 0.5).frames, sid) == []
    assert len(results_of(core.on_tick(T0 + 1.0).frames, sid)) == 1


def test_outage_windows_start_and_end_and_warm_up_follows() -> None:
    core, _ = session(SimConfig(meters=10, outages=((1.0, 2.0),), slow_start=0.5))
    core.on_tick(T0 + 0.6)
    assert not core.outage_active(T0 + 0.9)
    tick = core.on_tick(T0 + 1.0)
    assert tick.outage_started and core.outage_active(T0 + 2.9)
    tick = core.on_tick(T0 + 3.0)
    assert tick.outage_ended and core.warm_until == T0 + 3.5
    assert core.next_due(T0 + 0.5) == T0 + 1.0


def test_a_manual_outage_lasts_its_duration_or_until_ended() -> None:
    core = SimCore(SimConfig(meters=10), T0)
    core.begin_outage(T0, 5.0)
    assert core.outage_active(T0 + 4.9) and not core.outage_active(T0 + 5.0)
    core.begin_outage(T0)
    assert core.outage_active(T0 + 1e6)
    core.end_outage(T0 + 1)
    assert not core.outage_active(T0 + 1)


def test_results_for_a_closed_session_are_lost_but_the_command_still_runs() -> None:
    config = SimConfig(meters=10, disconnected_fraction=1.0, latency=LatencySpec("fixed", (1.0,)))
    core, sid = session(config)
    core.handle(sid, HesSubmit(batch_id=1, commands=(cmd("a", 1),)), T0)
    core.close_session(sid)
    assert core.on_tick(T0 + 1.0).frames == {}
    assert core.fleet.state("MPW00000001").control_state is HesControlState.CONNECTED
    assert core.stats.lost_to_closed_sessions == 1


def test_inspection_and_button_frames_show_and_change_the_true_relay() -> None:
    core = SimCore(SimConfig(meters=10, modes=((1, 1.0),), disconnected_fraction=1.0), T0)
    sid = core.open_session(T0)
    core.fleet.apply(3, HesAction.CONNECT)
    (seen,) = core.handle(sid, HesInspect(query_id=5, meters=("MPW00000003", "x")), T0)
    assert isinstance(seen, HesInspection) and seen.query_id == 5
    assert seen.states[0].control_state is HesControlState.READY_FOR_RECONNECTION
    assert seen.states[1].control_state is None
    (pressed,) = core.handle(sid, HesPressButton(query_id=6, meters=("MPW00000003",)), T0)
    assert isinstance(pressed, HesInspection)
    assert pressed.states[0].control_state is HesControlState.CONNECTED


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_rate": 1.5},
        {"failure_mix": (("melted", 1.0),)},
        {"outages": ((0.0, 0.0),)},
        {"rate_limit": -1.0},
        {"meters": -1},
    ],
)
def test_nonsense_knobs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "u", "expected"),
    [
        ("fixed:0.25", 0.9, 0.25),
        ("uniform:1,3", 0.5, 2.0),
        ("exp:1", 0.0, 0.0),
        ("lognormal:2,0.5", 0.5, 2.0),
    ],
)
def test_latency_specs_parse_and_sample(text: str, u: float, expected: float) -> None:
    assert LatencySpec.parse(text).sample(u) == pytest.approx(expected, abs=1e-9)
    assert str(LatencySpec.parse(text)) == text.replace("0.25", "0.25")


@pytest.mark.parametrize("text", ["gamma:1", "fixed:", "uniform:3,1", "fixed:-1", "exp:x"])
def test_bad_latency_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LatencySpec.parse(text)
