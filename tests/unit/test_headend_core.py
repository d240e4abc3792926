"""The sans-I/O adapter core against a scripted peer, and against `SimCore` over a virtual link.

No sockets, no clock: time is a number the test moves.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headend.adapter import AdapterConfig, ConnectionPhase, HeadEndAdapterCore, HeadEndStep
from headend.breaker import BreakerPhase, BreakerPolicy
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.sim.config import LatencySpec, SimConfig
from headend.sim.core import SimCore
from protocols.headend import (
    HesAction,
    HesBatchAccepted,
    HesBatchRejected,
    HesCommand,
    HesCommandResult,
    HesControlState,
    HesError,
    HesFrame,
    HesFrameReader,
    HesHeartbeat,
    HesHello,
    HesRead,
    HesReads,
    HesRejection,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
    encode_frame,
    encode_frames,
)

T0 = 1_700_000_000.0
FAST = AdapterConfig(
    linger=0.0,
    command_timeout=5.0,
    read_timeout=2.0,
    ack_timeout=3.0,
    retry_base=0.1,
    retry_max=0.5,
    jitter=0.0,
    reconnect_base=0.1,
    heartbeat_interval=1.0,
    idle_timeout=30.0,
)
WELCOME = HesWelcome(version=1, server="peer", max_batch=1000)
CONNECTED = (HesControlState.CONNECTED, True)
DISCONNECTED = (HesControlState.DISCONNECTED, False)
READY = (HesControlState.READY_FOR_RECONNECTION, False)


def cmd(
    cid: str, meter: str = "M1", action: HesAction = HesAction.CONNECT, expires: float = T0 + 60
) -> HesCommand:
    return HesCommand(cid, meter, action, expires)


class Scripted:
    """The core, a clock, and a scripted head-end reading what the core sends."""

    def __init__(self, config: AdapterConfig = FAST) -> None:
        self.core = HeadEndAdapterCore(config)
        self.now = T0
        self.outcomes: list[HeadEndOutcome] = []
        self.sent: list[HesFrame] = []
        self.reader = HesFrameReader()
        self.connects = 0
        self.closes = 0
        self.last: HeadEndStep | None = None

    def _take(self, step: HeadEndStep) -> HeadEndStep:
        self.last = step
        self.outcomes += step.outcomes
        self.connects += step.connect
        self.closes += step.close
        if step.close:
            self.reader = HesFrameReader()
        self.reader.feed(step.send)
        while (frame := self.reader.next_frame()) is not None:
            self.sent.append(frame)
        return step

    def tick(self, dt: float = 0.0) -> HeadEndStep:
        self.now += dt
        return self._take(self.core.on_tick(self.now))

    def submit(self, commands: Iterable[HesCommand]) -> HeadEndStep:
        return self._take(self.core.submit(commands, self.now))

    def receive(self, *frames: HesFrame) -> HeadEndStep:
        return self._take(self.core.on_bytes(encode_frames(frames), self.now))

    def ready(self, welcome: HesWelcome = WELCOME) -> None:
        step = self.tick()
        assert step.connect
        self._take(self.core.connection_made(self.now))
        assert isinstance(self.sent[-1], HesHello)
        self.receive(welcome)
        assert self.core.phase is ConnectionPhase.READY

    def submits(self) -> list[HesSubmit]:
        return [f for f in self.sent if isinstance(f, HesSubmit)]

    def last_submit(self) -> HesSubmit:
        return self.submits()[-1]

    def ack_and_answer(self, answer: dict[HesAction, tuple[HesControlState, bool]] | None = None) -> None:
        """Accept the last submit and report every command processed with the given relay state."""
        sub = self.last_submit()
        answer = answer or {HesAction.CONNECT: CONNECTED, HesAction.READ: CONNECTED}
        results = tuple(
            result(c.command_id, c.meter, *answer.get(c.action, CONNECTED), status=HesResultStatus.PROCESSED)
            for c in sub.commands
        )
        self.receive(HesBatchAccepted(batch_id=sub.batch_id), HesResults(results=results))


def result(
    wire_id: str,
    meter: str,
    state: HesControlState | None = HesControlState.CONNECTED,
    output: bool | None = True,
    *,
    status: HesResultStatus = HesResultStatus.PROCESSED,
    error: str | None = None,
    t: float = T0,
) -> HesCommandResult:
    return HesCommandResult(wire_id, meter, status, state, output, 2, error, t)


# --- connection ------------------------------------------------------------------------------


def test_the_first_tick_asks_for_a_connection_and_hello_offers_the_supported_versions() -> None:
    s = Scripted()
    s.ready()
    hello = s.sent[0]
    assert isinstance(hello, HesHello) and hello.versions == (1,)


def test_a_welcome_with_an_unknown_version_closes_the_connection() -> None:
    s = Scripted()
    s.tick()
    s._take(s.core.connection_made(s.now))
    step = s.receive(HesWelcome(version=7, server="x"))
    assert step.close and s.core.phase is ConnectionPhase.IDLE


def test_a_handshake_that_never_finishes_is_closed_at_its_timeout() -> None:
    s = Scripted()
    s.tick()
    s._take(s.core.connection_made(s.now))
    assert not s.tick(FAST.handshake_timeout - 0.01).close
    assert s.tick(0.01).close


def test_an_idle_connection_sends_heartbeats_and_a_silent_one_is_closed() -> None:
    s = Scripted()
    s.ready()
    s.tick(FAST.heartbeat_interval)
    assert isinstance(s.sent[-1], HesHeartbeat)
    s.receive(HesHeartbeat(seq=1))
    s.tick(FAST.idle_timeout - 0.1)
    assert s.core.phase is ConnectionPhase.READY
    assert s.tick(0.2).close


# --- batching and expiry -----------------------------------------------------------------------


def test_commands_go_out_in_batches_of_at_most_max_batch() -> None:
    s = Scripted()
    s.ready(HesWelcome(version=1, server="p", max_batch=4))
    s.submit(cmd(f"c{i}", f"M{i}") for i in range(10))
    assert [len(f.commands) for f in s.submits()] == [4, 4, 2]
    assert len({c.command_id for f in s.submits() for c in f.commands}) == 10


def test_linger_gathers_commands_submitted_one_by_one_into_one_frame() -> None:
    s = Scripted(AdapterConfig(linger=0.01))
    s.ready()
    for i in range(5):
        s.submit([cmd(f"c{i}", f"M{i}")])
    assert s.submits() == []
    assert s.last is not None and s.last.wake_at == pytest.approx(T0 + 0.01)
    s.tick(0.01)
    assert [len(f.commands) for f in s.submits()] == [5]


def test_a_command_already_expired_is_never_sent_and_ends_expired() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("old", expires=s.now)])
    assert [(o.command_id, o.kind, o.attempts) for o in s.outcomes] == [("old", OutcomeKind.EXPIRED, 0)]
    assert s.submits() == []


def test_a_command_queued_while_disconnected_expires_on_time_unsent() -> None:
    s = Scripted()
    s.submit([cmd("a", expires=T0 + 2)])
    s._take(s.core.connect_failed(s.now))
    s.tick(1.9)
    assert s.outcomes == []
    s.tick(0.1)
    assert [o.kind for o in s.outcomes] == [OutcomeKind.EXPIRED]
    assert s.submits() == []


def test_an_expiry_is_honoured_when_a_retry_comes_due_after_it() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a", expires=T0 + 0.05)])
    sub = s.last_submit()
    wire = sub.commands[0].command_id
    s.receive(
        HesBatchAccepted(batch_id=sub.batch_id),
        HesResults(
            results=(
                result(wire, "M1", *DISCONNECTED, status=HesResultStatus.ERROR, error="no_communication"),
            )
        ),
    )
    s.tick(1.0)
    assert [o.kind for o in s.outcomes] == [OutcomeKind.EXPIRED]
    assert len(s.submits()) == 1


# --- read-back and outcomes ---------------------------------------------------------------------


def test_a_processed_command_is_final_only_after_a_read_confirms_it() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.ack_and_answer()
    assert s.outcomes == []
    read = s.last_submit().commands[0]
    assert read.action is HesAction.READ and read.meter == "M1" and read.command_id != "a/1"
    s.ack_and_answer()
    (o,) = s.outcomes
    assert (o.command_id, o.kind, o.control_state, o.output_state, o.attempts) == (
        "a",
        OutcomeKind.CONNECTED,
        HesControlState.CONNECTED,
        True,
        1,
    )


def test_a_connect_that_reads_back_ready_for_reconnection_ends_awaiting_the_button() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.ack_and_answer({HesAction.CONNECT: READY, HesAction.READ: READY})
    s.ack_and_answer({HesAction.READ: READY})
    (o,) = s.outcomes
    assert o.kind is OutcomeKind.READY_FOR_RECONNECTION and o.awaiting_button


def test_a_disconnect_confirmed_by_read_ends_disconnected() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("d", action=HesAction.DISCONNECT)])
    s.ack_and_answer({HesAction.DISCONNECT: DISCONNECTED})
    s.ack_and_answer({HesAction.READ: DISCONNECTED})
    assert [o.kind for o in s.outcomes] == [OutcomeKind.DISCONNECTED]


def test_a_read_command_ends_in_the_state_it_read_without_a_second_read() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("r", action=HesAction.READ)])
    s.ack_and_answer({HesAction.READ: READY})
    assert [o.kind for o in s.outcomes] == [OutcomeKind.READY_FOR_RECONNECTION]
    assert len(s.submits()) == 1


def test_a_read_back_that_contradicts_the_report_resends_the_command() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.ack_and_answer({HesAction.CONNECT: CONNECTED})
    s.ack_and_answer({HesAction.READ: DISCONNECTED})  # the head-end's word was wrong
    assert s.outcomes == []
    s.tick(FAST.retry_base)
    again = s.last_submit().commands[0]
    assert again.action is HesAction.CONNECT and again.command_id == "a/3"
    s.ack_and_answer()
    s.ack_and_answer()
    (o,) = s.outcomes
    assert o.kind is OutcomeKind.CONNECTED and o.attempts == 2
    assert s.core.stats.mismatches == 1


def test_persistent_mismatches_end_failed_and_not_retryable() -> None:
    s = Scripted(AdapterConfig(linger=0, max_attempts=2, retry_base=0.1, jitter=0))
    s.ready()
    s.submit([cmd("a")])
    for _ in range(2):
        s.ack_and_answer({HesAction.CONNECT: CONNECTED})
        s.ack_and_answer({HesAction.READ: DISCONNECTED})
        s.tick(1.0)
    (o,) = s.outcomes
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, "readback_mismatch", False, 2)


# --- errors and retries -------------------------------------------------------------------------


def answer_error(s: Scripted, code: str) -> None:
    sub = s.last_submit()
    (c,) = sub.commands
    s.receive(
        HesBatchAccepted(batch_id=sub.batch_id),
        HesResults(
            results=(result(c.command_id, c.meter, *DISCONNECTED, status=HesResultStatus.ERROR, error=code),)
        ),
    )


def test_a_retryable_error_is_retried_after_a_backoff_and_not_before() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    answer_error(s, "no_communication")
    s.tick(FAST.retry_base - 0.01)
    assert len(s.submits()) == 1
    s.tick(0.01)
    assert len(s.submits()) == 2 and s.last_submit().commands[0].action is HesAction.CONNECT


@pytest.mark.parametrize(
    "code", ["relay_stuck", "load_side_voltage_present", "not_permitted", "brand_new_code"]
)
def test_a_non_retryable_error_fails_at_once(code: str) -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    answer_error(s, code)
    (o,) = s.outcomes
    assert (o.kind, o.error, o.retryable, o.attempts) == (OutcomeKind.FAILED, code, False, 1)
    s.tick(10)
    assert len(s.submits()) == 1


def test_retries_stop_at_max_attempts_with_a_retryable_failure() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    for _ in range(FAST.max_attempts):
        answer_error(s, "no_communication")
        s.tick(FAST.retry_max)
    (o,) = s.outcomes
    assert (o.kind, o.error, o.retryable, o.attempts) == (
        OutcomeKind.FAILED,
        "no_communication",
        True,
        FAST.max_attempts,
    )
    assert len(s.submits()) == FAST.max_attempts


def test_backoff_grows_exponentially_with_jitter_inside_its_bounds() -> None:
    config = AdapterConfig(retry_base=1.0, retry_multiplier=2.0, retry_max=5.0, jitter=0.5, seed=3)
    core = HeadEndAdapterCore(config)
    for n, top in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [core._backoff(n) for _ in range(200)]
        assert all(top * 0.5 <= d <= top for d in delays)
        assert max(delays) - min(delays) > top * 0.3  # jittered, not constant


def test_rate_limited_commands_wait_and_retry_without_spending_an_attempt() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    sub = s.last_submit()
    s.receive(HesBatchRejected(batch_id=sub.batch_id, reason="rate_limited"))
    s.tick(FAST.rate_limited_delay)
    s.ack_and_answer()
    s.ack_and_answer()
    (o,) = s.outcomes
    assert o.kind is OutcomeKind.CONNECTED and o.attempts == 1
    assert s.core.stats.rate_limited == 1


@pytest.mark.parametrize("reason", ["unknown_meter", "malformed"])
def test_a_refused_command_ends_rejected_with_the_reason(reason: str) -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a"), cmd("b", "M2")])
    sub = s.last_submit()
    s.receive(HesBatchAccepted(batch_id=sub.batch_id, rejected=(HesRejection("b/1", reason),)))
    (o,) = s.outcomes
    assert (o.command_id, o.kind, o.reason) == ("b", OutcomeKind.REJECTED, reason)


def test_a_command_the_head_end_calls_expired_ends_expired() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    (c,) = s.last_submit().commands
    s.receive(HesResults(results=(result(c.command_id, "M1", None, None, status=HesResultStatus.EXPIRED),)))
    assert [o.kind for o in s.outcomes] == [OutcomeKind.EXPIRED]


def test_a_peer_error_naming_a_batch_rejects_its_commands_as_malformed() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.receive(HesError(code="malformed", batch_id=s.last_submit().batch_id))
    assert [(o.kind, o.reason) for o in s.outcomes] == [(OutcomeKind.REJECTED, "malformed")]
    assert s.core.phase is ConnectionPhase.READY


def test_overlong_command_ids_are_rejected_before_sending() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("x" * 200)])
    assert [(o.kind, o.reason) for o in s.outcomes] == [(OutcomeKind.REJECTED, "malformed")]


# --- duplicates, timeouts, lost connections ---------------------------------------------------


def test_duplicated_and_stale_results_are_ignored() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    sub = s.last_submit()
    first = result(sub.commands[0].command_id, "M1")
    s.receive(HesBatchAccepted(batch_id=sub.batch_id), HesResults(results=(first, first)))
    read = s.last_submit()
    r = result(read.commands[0].command_id, "M1")
    s.receive(HesBatchAccepted(batch_id=read.batch_id), HesResults(results=(r, r, first)))
    s.receive(HesResults(results=(r,)))
    assert [o.command_id for o in s.outcomes] == ["a"]
    assert s.core.stats.stale_results == 4


def test_a_duplicate_submission_of_a_pending_command_is_ignored() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a"), cmd("a")])
    s.submit([cmd("a")])
    assert sum(len(f.commands) for f in s.submits()) == 1
    assert s.core.stats.duplicate_submits == 2


def test_a_command_without_result_is_verified_by_a_read_and_not_resent_if_it_ran() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.receive(HesBatchAccepted(batch_id=s.last_submit().batch_id))
    s.tick(FAST.command_timeout)
    verify = s.last_submit().commands[0]
    assert verify.action is HesAction.READ
    s.ack_and_answer({HesAction.READ: CONNECTED})
    (o,) = s.outcomes
    assert o.kind is OutcomeKind.CONNECTED and o.attempts == 1
    assert sum(1 for f in s.submits() for c in f.commands if c.action is HesAction.CONNECT) == 1


def test_a_command_without_result_that_did_not_run_is_sent_again() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    s.receive(HesBatchAccepted(batch_id=s.last_submit().batch_id))
    s.tick(FAST.command_timeout)
    s.ack_and_answer({HesAction.READ: DISCONNECTED})
    s.tick(FAST.retry_max)
    assert s.last_submit().commands[0].action is HesAction.CONNECT


def test_an_unanswered_submit_closes_the_connection_and_its_commands_are_verified_after() -> None:
    s = Scripted()
    s.ready()
    s.submit([cmd("a")])
    step = s.tick(FAST.ack_timeout)
    assert step.close and s.core.phase is ConnectionPhase.IDLE
    assert s.core.breaker.failures == 1
    s.tick(FAST.reconnect_base)
    s._take(s.core.connection_made(s.now))
    s.receive(WELCOME)
    assert s.last_submit().commands[0].action is HesAction.READ  # verify first: it may have run
    s.ack_and_answer({HesAction.READ: CONNECTED})
    assert [o.kind for o in s.outcomes] == [OutcomeKind.CONNECTED]


def test_a_lost_connection_reconnects_with_growing_backoff() -> None:
    s = Scripted()
    s.ready()
    s._take(s.core.connection_lost(s.now))
    assert s.core.phase is ConnectionPhase.IDLE
    assert s.last is not None and s.last.wake_at == pytest.approx(s.now + FAST.reconnect_base)
    assert not s.tick(FAST.reconnect_base - 0.01).connect
    assert s.tick(0.01).connect
    s._take(s.core.connect_failed(s.now))
    assert s.last is not None and s.last.wake_at == pytest.approx(s.now + 2 * FAST.reconnect_base)


def test_the_breaker_opens_after_repeated_connect_failures_and_probes_once_per_cooldown() -> None:
    policy = BreakerPolicy(failure_threshold=3, open_seconds=1.0, max_open_seconds=4.0)
    s = Scripted(AdapterConfig(linger=0, reconnect_base=0.01, jitter=0, breaker=policy))
    s.submit([cmd("a", expires=T0 + 600)])
    attempts = []
    for _ in range(1000):  # 10 simulated seconds in 10 ms steps, the head-end refusing every connect
        step = s.tick(0.01)
        if step.connect:
            attempts.append(round(s.now - T0, 2))
            s._take(s.core.connect_failed(s.now))
    assert s.core.breaker.phase is BreakerPhase.OPEN
    assert len(attempts) <= 3 + 4  # three quick tries, then one probe per cooldown (1, 2, 4, 4 s)
    assert s.outcomes == []  # nothing lost, nothing failed: the command waits
    while not s.tick(0.01).connect:
        pass
    s._take(s.core.connection_made(s.now))
    s.receive(WELCOME)
    assert s.core.breaker.phase is BreakerPhase.HALF_OPEN  # a welcome alone proves little
    assert isinstance(s.sent[-2], HesHeartbeat)  # so it asks for an echo at once
    s.receive(HesHeartbeat(seq=1))
    assert s.core.breaker.phase is BreakerPhase.CLOSED
    s.ack_and_answer()
    s.ack_and_answer()
    assert [o.kind for o in s.outcomes] == [OutcomeKind.CONNECTED]


def test_a_head_end_that_welcomes_and_hangs_up_still_trips_the_breaker() -> None:
    policy = BreakerPolicy(failure_threshold=3, open_seconds=1.0, max_open_seconds=4.0)
    s = Scripted(AdapterConfig(linger=0, reconnect_base=0.01, jitter=0, breaker=policy))
    connects = 0
    for _ in range(500):  # 5 simulated seconds
        if s.tick(0.01).connect:
            connects += 1
            s._take(s.core.connection_made(s.now))
            s.receive(WELCOME)
            s._take(s.core.connection_lost(s.now))
    assert s.core.breaker.trips == 1
    assert connects <= 3 + 3


def test_a_fatal_peer_error_closes_the_connection() -> None:
    s = Scripted()
    s.ready()
    assert s.receive(HesError(code="too_large", fatal=True)).close


def test_garbage_from_the_peer_is_answered_and_skipped_unless_the_stream_is_broken() -> None:
    s = Scripted()
    s.ready()
    s._take(s.core.on_bytes(b"\x00\x00\x00\x01\xc1" + encode_frame(HesHeartbeat(seq=1)), s.now))
    assert isinstance(s.sent[-1], HesError) and not s.sent[-1].fatal
    assert s.core.phase is ConnectionPhase.READY
    step = s.core.on_bytes(b"\xff\xff\xff\xff", s.now)
    assert step.close


def test_the_in_flight_window_bounds_what_is_outstanding() -> None:
    s = Scripted(AdapterConfig(linger=0, max_in_flight=5))
    s.ready()
    s.submit(cmd(f"c{i}", f"M{i}") for i in range(12))
    assert s.core.in_flight == 5
    s.ack_and_answer()
    assert s.core.in_flight == 5  # five reads replaced five commands


def test_client_side_pacing_follows_the_announced_rate_limit() -> None:
    s = Scripted(AdapterConfig(linger=0, rate_bucket_seconds=0.1, rate_headroom=1.0))
    s.ready(HesWelcome(version=1, server="p", rate_limit=100.0))
    s.submit(cmd(f"c{i}", f"M{i}") for i in range(100))
    sent_at: list[tuple[float, int]] = [(0.0, sum(len(f.commands) for f in s.submits()))]
    for _ in range(60):
        s.tick(0.02)
        sent_at.append((round(s.now - T0, 2), sum(len(f.commands) for f in s.submits())))
    assert sent_at[0][1] == 10  # the bucket's burst
    at_half_second = dict(sent_at)[0.5]
    assert 55 <= at_half_second <= 62  # 10 + 100/s x 0.5 s
    assert sent_at[-1][1] == 100


# --- the core against SimCore over a virtual link ----------------------------------------------


class VirtualLink:
    """Adapter core ↔ SimCore in memory; the link can drop, the sim can go down."""

    def __init__(self, core: HeadEndAdapterCore, sim: SimCore, seed: int, drop_link: float) -> None:
        self.core, self.sim = core, sim
        self.rng = random.Random(seed)
        self.drop_link = drop_link
        self.sid: int | None = None
        self.server_reader = HesFrameReader()
        self.now = sim.started_at
        self.outcomes: list[HeadEndOutcome] = []
        self.steps: list[HeadEndStep] = []

    def _deliver_to_sim(self, data: bytes) -> None:
        if self.sid is None:
            return
        self.server_reader.feed(data)
        replies: list[HesFrame] = []
        while (frame := self.server_reader.next_frame()) is not None:
            replies += self.sim.handle(self.sid, frame, self.now)
        replies += self.sim.take_results().get(self.sid, [])
        if replies:
            self.steps.append(self.core.on_bytes(encode_frames(replies), self.now))

    def _drain(self) -> None:
        while self.steps:
            step = self.steps.pop(0)
            self.outcomes += step.outcomes
            if step.close and self.sid is not None:
                self.sim.close_session(self.sid)
                self.sid = None
            if step.connect:
                if self.sim.outage_active(self.now):
                    self.steps.append(self.core.connect_failed(self.now))
                else:
                    self.sid = self.sim.open_session(self.now)
                    self.server_reader = HesFrameReader()
                    self.steps.append(self.core.connection_made(self.now))
            if step.send:
                self._deliver_to_sim(step.send)

    def step(self, dt: float) -> None:
        """Deliver what is pending, then let dt pass: sim tick, maybe a dropped link, core tick."""
        self._drain()
        self.now += dt
        tick = self.sim.on_tick(self.now)
        if tick.outage_started and self.sid is not None:
            self.sim.close_session(self.sid)
            self.sid = None
            self.steps.append(self.core.connection_lost(self.now))
        if self.sid is not None and self.rng.random() < self.drop_link:
            self.sim.close_session(self.sid)
            self.sid = None
            self.steps.append(self.core.connection_lost(self.now))
        if self.sid is not None and self.sid in tick.frames:
            self.steps.append(self.core.on_bytes(encode_frames(tick.frames[self.sid]), self.now))
        self.steps.append(self.core.on_tick(self.now))
        self._drain()

    def run(self, commands: Sequence[HesCommand], dt: float, limit: float) -> None:
        self.steps.append(self.core.submit(commands, self.now))
        end = self.now + limit
        while len(self.outcomes) < len(commands) and self.now < end:
            self.step(dt)


def check_outcomes(link: VirtualLink, commands: Sequence[HesCommand]) -> Counter[OutcomeKind]:
    ids = [o.command_id for o in link.outcomes]
    assert len(ids) == len(set(ids)), "a command ended twice"
    assert set(ids) == {c.command_id for c in commands}, "a command never ended"
    truth = link.sim.fleet
    for o in link.outcomes:
        state = truth.state(o.meter).control_state
        if o.kind is OutcomeKind.CONNECTED:
            assert state is HesControlState.CONNECTED
        elif o.kind is OutcomeKind.READY_FOR_RECONNECTION:
            assert state is HesControlState.READY_FOR_RECONNECTION
        elif o.kind is OutcomeKind.EXPIRED:
            assert state is HesControlState.DISCONNECTED, "an expired command ran"
    return Counter(o.kind for o in link.outcomes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    failure=st.floats(0, 0.3),
    drop=st.floats(0, 0.3),
    dup=st.floats(0, 0.3),
    misreport=st.floats(0, 0.2),
    drop_link=st.sampled_from([0.0, 0.002, 0.02]),
    short_expiry=st.booleans(),
)
def test_under_any_mix_of_faults_every_command_ends_exactly_once_and_truthfully(
    seed: int, failure: float, drop: float, dup: float, misreport: float, drop_link: float, short_expiry: bool
) -> None:
    config = SimConfig(
        meters=300,
        seed=seed,
        modes=((2, 0.8), (1, 0.2)),
        disconnected_fraction=1.0,
        latency=LatencySpec("uniform", (0.0, 0.4)),
        failure_rate=failure,
        drop_rate=drop,
        duplicate_rate=dup,
        reorder_rate=0.3,
        misreport_rate=misreport,
        rate_limit=400.0,
    )
    sim = SimCore(config, T0)
    core = HeadEndAdapterCore(AdapterConfig(linger=0.01, command_timeout=1.0, read_timeout=1.0, seed=seed))
    expiry = T0 + (0.5 if short_expiry else 120)
    commands = [cmd(f"c{i}", sim.fleet.serial(i), expires=expiry) for i in range(300)]
    link = VirtualLink(core, sim, seed, drop_link)
    link.run(commands, dt=0.02, limit=300)
    check_outcomes(link, commands)
    assert core.pending == 0


def test_an_outage_opens_the_breaker_loses_nothing_and_everything_completes_after() -> None:
    config = SimConfig(
        meters=2000,
        disconnected_fraction=1.0,
        latency=LatencySpec("uniform", (0.0, 0.2)),
        outages=((1.0, 10.0),),
    )
    sim = SimCore(config, T0)
    core = HeadEndAdapterCore(
        AdapterConfig(command_timeout=2.0, read_timeout=2.0, max_batch=100, rate_limit=1000)
    )
    commands = [cmd(f"c{i}", sim.fleet.serial(i), expires=T0 + 120) for i in range(2000)]
    link = VirtualLink(core, sim, 1, 0.0)
    opened = False
    link.steps.append(core.submit(commands, link.now))
    while len(link.outcomes) < len(commands) and link.now < T0 + 60:
        link.step(0.01)
        opened = opened or core.breaker.phase is BreakerPhase.OPEN
    assert opened
    kinds = check_outcomes(link, commands)
    assert kinds == Counter({OutcomeKind.CONNECTED: 2000})
    assert core.stats.connects <= 10  # probes, not a storm


@pytest.mark.parametrize(
    ("configured", "announced", "paced"),
    [(None, 100.0, 99.0), (50.0, 100.0, 50.0), (500.0, 100.0, 99.0), (50.0, 0.0, 50.0), (None, 0.0, 0.0)],
)
def test_pacing_takes_the_lower_of_the_configured_and_announced_limits(
    configured: float | None, announced: float, paced: float
) -> None:
    s = Scripted(AdapterConfig(linger=0, rate_limit=configured, rate_headroom=0.99))
    s.ready(HesWelcome(version=1, server="p", rate_limit=announced))
    assert s.core._rate == pytest.approx(paced)


# --- consumption reads (HesReads) ------------------------------------------------------------


def test_consumption_reads_are_kept_for_the_owner_and_a_malformed_reads_frame_is_answered() -> None:
    s = Scripted()
    s.ready()
    read = HesRead("MPW00000001", "MPW00000001:2024-05-01", "2024-05-01", 8_250, None)
    s.receive(HesReads(reads=(read, read._replace(read_id="again"))))
    assert s.core.take_consumption() == [read, read._replace(read_id="again")]
    assert s.core.take_consumption() == []  # taken once
    bad = msgpack.packb([9, [["MPW00000001", "r", "2024-05-01", -4]]])
    s._take(s.core.on_bytes(len(bad).to_bytes(4, "big") + bad, s.now))
    errors = [f for f in s.sent if isinstance(f, HesError)]
    assert errors and errors[-1].code == "malformed" and "energy_wh" in errors[-1].detail
    assert s.core.phase is ConnectionPhase.READY and s.core.take_consumption() == []
    assert s.core.stats.reads_received == 2
