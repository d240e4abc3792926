"""Daily consumption reads: the simulator reports a day when it ends (its clock, or a lab clock moved),
and the gateway's router maps serials to accounts and batches `ReportConsumption` per shard group."""

from __future__ import annotations

from datetime import date, datetime

from actors.gateway_reads import BATCH, WINDOW, ReadsRouter
from domain.commands import ReportConsumption
from headend.sim.config import DailyReadsMode, SimConfig
from headend.sim.core import SimCore
from headend.sim.load import daily_wh
from headend.sim.reads import IST, MAX_CATCH_UP_DAYS
from protocols import codec
from protocols.headend import HesError, HesHello, HesRead, HesReads
from protocols.runtime import MeterCommandBatch, MeterSerialsFound, MeterSerialsQuery


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=IST).timestamp()


def _reads(core: SimCore, now: float) -> list[HesRead]:
    out: list[HesRead] = []
    for _ in range(1000):
        frames = core.on_tick(now).frames
        got = [r for fs in frames.values() for f in fs if isinstance(f, HesReads) for r in f.reads]
        if not got:
            return out
        out += got
    raise AssertionError("reads never stopped")


def _core(mode: DailyReadsMode, now: float, meters: int = 5, max_batch: int = 2) -> tuple[SimCore, int]:
    core = SimCore(SimConfig(meters=meters, daily_reads=mode, seed=7, max_batch=max_batch), now)
    sid = core.open_session(now)
    core.handle(sid, HesHello(client="t"), now)
    return core, sid


def test_midnight_ist_on_the_simulators_clock_sends_every_meters_read_of_the_day_that_ended() -> None:
    core, _ = _core(DailyReadsMode.WALL, _at("2024-05-01T23:59:00"))
    assert _reads(core, _at("2024-05-01T23:59:59")) == []
    reads = _reads(core, _at("2024-05-02T00:00:01"))
    day = date(2024, 5, 1)
    serials = [f"MPW{i:08d}" for i in range(5)]
    assert [(r.serial, r.read_id, r.day, r.energy_wh) for r in reads] == [
        (s, f"{s}:2024-05-01", "2024-05-01", daily_wh(7, s, day)) for s in serials
    ]
    assert _reads(core, _at("2024-05-02T12:00:00")) == []  # once per day
    assert core.stats.reads_sent == 5


def test_a_lab_clock_move_reports_each_day_that_ended_and_the_wall_clock_reports_nothing() -> None:
    core, _ = _core(DailyReadsMode.LAB, _at("2024-05-01T10:00:00"), meters=2)
    assert _reads(core, _at("2030-01-01T00:00:00")) == []  # the simulator's own clock does not count
    assert core.lab_clock(_at("2024-05-01T10:00:00"), _at("2024-05-03T09:00:00")) == 2
    reads = _reads(core, _at("2030-01-01T00:00:00"))
    assert [r.read_id for r in reads] == ["MPW00000000:2024-05-01", "MPW00000001:2024-05-01",
                                         "MPW00000000:2024-05-02", "MPW00000001:2024-05-02"]
    assert core.lab_clock(_at("2024-05-03T09:00:00"), _at("2024-05-03T23:00:00")) == 0  # same day


def test_a_long_jump_reports_only_the_last_days_a_meter_can_still_take() -> None:
    core, _ = _core(DailyReadsMode.LAB, 0.0, meters=1)
    assert core.lab_clock(_at("2024-01-01T10:00:00"), _at("2024-05-01T10:00:00")) == MAX_CATCH_UP_DAYS
    assert core.daily.skipped_days == (date(2024, 5, 1) - date(2024, 1, 1)).days - MAX_CATCH_UP_DAYS
    assert _reads(core, 0.0)[0].day == "2024-03-31"


def test_reads_wait_for_a_session_that_said_hello_and_go_to_one_session_only() -> None:
    now = _at("2024-05-01T10:00:00")
    core = SimCore(SimConfig(meters=3, daily_reads=DailyReadsMode.LAB), now)
    core.lab_clock(now, now + 86_400)
    assert _reads(core, now) == []  # nobody to send them to: held
    first, second = core.open_session(now), core.open_session(now)
    for sid in (second, first):
        core.handle(sid, HesHello(client="t"), now)
    frames = core.on_tick(now).frames
    assert set(frames) == {first}


def test_an_older_clients_unknown_frame_answer_is_taken_quietly() -> None:
    core, sid = _core(DailyReadsMode.LAB, _at("2024-05-01T10:00:00"))
    assert core.handle(sid, HesError(code="unknown_frame", detail="unknown frame tag 9"), 0.0) == []


def test_the_library_default_sends_no_unasked_frames() -> None:
    core, _ = _core(DailyReadsMode.OFF, _at("2024-05-01T23:00:00"))
    assert _reads(core, _at("2024-05-09T00:00:00")) == []
    assert core.lab_clock(_at("2024-05-01T23:00:00"), _at("2024-05-09T00:00:00")) == 0


# --- the gateway's router ----------------------------------------------------------------------


def _read(serial: str, day: str = "2024-05-01", wh: int = 8000) -> HesRead:
    return HesRead(serial, f"{serial}:{day}", day, wh, None)


def _query(sends: list[tuple[int, object]]) -> MeterSerialsQuery:
    q = sends[0][1]
    assert isinstance(q, MeterSerialsQuery)
    return q


def test_reads_are_mapped_by_serial_and_sent_to_each_meters_group_as_report_consumption() -> None:
    router = ReadsRouter("hes-sim")
    sends = router.add([_read("S1"), _read("S2"), _read("S3"), _read("S9")], [0, 1], 0.0)
    q = _query(sends)
    assert sorted(g for g, _ in sends) == [0, 1] and q.serials == ("S1", "S2", "S3", "S9")
    assert router.answer(MeterSerialsFound(request_id=q.request_id, group=0, found=(("S1", "A1", True),)),
                         [0, 1], 1.0) == []  # group 1 has not answered yet
    sends = router.answer(MeterSerialsFound(request_id=q.request_id, group=1,
                                            found=(("S2", "A2", True), ("S3", "A3", False))), [0, 1], 2.0)
    by_group = {g: codec.decode_each(m.payload) for g, m in sends if isinstance(m, MeterCommandBatch)}
    assert by_group == {
        0: [ReportConsumption(account="A1", read_id="S1:2024-05-01", read_date="2024-05-01", energy_wh=8000,
                              source="hes-sim")],
        1: [ReportConsumption(account="A2", read_id="S2:2024-05-01", read_date="2024-05-01", energy_wh=8000,
                              source="hes-sim")],
    }
    (end,) = router.ended
    assert end.counts == {"forwarded": 2, "postpaid": 1, "unknown_serial": 1, "unrouted": 0}
    assert end.unknown == ("S9",)


def test_a_group_that_does_not_answer_leaves_its_reads_unrouted_not_unknown() -> None:
    router = ReadsRouter("h")
    q = _query(router.add([_read("S1"), _read("S2")], [0, 1], 0.0))
    found = MeterSerialsFound(request_id=q.request_id, group=0, found=(("S1", "A1", True),))
    router.answer(found, [0, 1], 1.0)
    assert router.tick([0, 1], 29.0) == []
    sends = router.tick([0, 1], 31.0)
    assert [g for g, m in sends if isinstance(m, MeterCommandBatch)] == [0]
    assert router.ended[0].counts["unrouted"] == 1 and router.ended[0].unknown == ()


def test_reads_arriving_during_a_round_wait_for_the_next_and_with_no_group_known_they_wait() -> None:
    router = ReadsRouter("h")
    assert router.add([_read("S1")], [], 0.0) == [] and router.busy
    q1 = _query(router.add([], [0], 0.0))
    assert router.add([_read("S2")], [0], 0.1) == []  # one round at a time
    sends = router.answer(MeterSerialsFound(request_id=q1.request_id, group=0), [0], 0.2)
    q2 = _query([s for s in sends if isinstance(s[1], MeterSerialsQuery)])
    assert q2.serials == ("S2",)
    late = MeterSerialsFound(request_id=q1.request_id, group=0)
    assert router.answer(late, [0], 0.3) == []  # an answer to a round that ended: ignored


def test_batches_hold_at_most_batch_commands_and_at_most_window_wait_unanswered_per_group() -> None:
    router = ReadsRouter("h")
    n = BATCH * (WINDOW + 1) + 1
    reads = [_read("S1", day=f"2024-05-{1 + i % 28:02d}") for i in range(n)]
    q = _query(router.add(reads, [0], 0.0))
    sends = router.answer(MeterSerialsFound(request_id=q.request_id, group=0, found=(("S1", "A1", True),)),
                          [0], 1.0)
    batches = [m for _, m in sends if isinstance(m, MeterCommandBatch)]
    assert len(batches) == WINDOW and all(len(codec.decode_each(b.payload)) == BATCH for b in batches)
    more = router.batch_answered(0, batches[0].batch_id, 2.0)
    assert len(more) == 1
    rest = router.batch_answered(0, batches[1].batch_id, 2.0)
    assert [len(codec.decode_each(m.payload)) for _, m in rest if isinstance(m, MeterCommandBatch)] == [1]
    assert not router.busy
