"""Head-end reference protocol frames: round trips, stream splitting, limits, and fuzzing."""

from __future__ import annotations

import math
import re

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import FrameError, ProtocolError
from protocols.headend import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_ID_CHARS,
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
    HesInspect,
    HesInspection,
    HesMeterState,
    HesPressButton,
    HesRead,
    HesReads,
    HesRejection,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
    choose_version,
    decode_frame,
    encode_frame,
    encode_frames,
)

ids = st.text(min_size=1, max_size=20)
counts = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
rates = st.floats(min_value=0, max_value=1e9, allow_nan=False)
opt_state = st.none() | st.sampled_from(HesControlState)
opt_bool = st.none() | st.booleans()
opt_mode = st.none() | st.integers(0, 6)

# (the reference wire carries no credit update: CREDIT and credit_paise never cross it)
wire_actions = st.sampled_from([a for a in HesAction if a is not HesAction.CREDIT])
commands = st.builds(HesCommand, ids, ids, wire_actions, finite, st.none())
results = st.builds(
    HesCommandResult,
    ids,
    ids,
    st.sampled_from(HesResultStatus),
    opt_state,
    opt_bool,
    opt_mode,
    st.none() | ids,
    finite,
)
meter_states = st.builds(HesMeterState, ids, opt_state, opt_bool, opt_mode)
consumption = st.builds(
    HesRead,
    ids,
    ids,
    st.dates().map(lambda d: d.isoformat()).filter(lambda d: len(d) == 10),
    st.integers(0, 10_000_000),
    st.none() | st.integers(0, 2**63 - 1),
)

FRAME_STRATEGIES: dict[type, st.SearchStrategy[HesFrame]] = {
    HesHello: st.builds(HesHello, client=ids, versions=st.lists(st.integers(0, 100), max_size=5).map(tuple)),
    HesWelcome: st.builds(
        HesWelcome,
        version=counts,
        server=ids,
        max_frame_bytes=st.integers(64, 2**40),
        max_batch=st.integers(1, 10**6),
        rate_limit=rates,
        read_rate_limit=rates,
    ),
    HesSubmit: st.builds(HesSubmit, batch_id=counts, commands=st.lists(commands, max_size=5).map(tuple)),
    HesBatchAccepted: st.builds(
        HesBatchAccepted,
        batch_id=counts,
        rejected=st.lists(st.builds(HesRejection, ids, ids), max_size=5).map(tuple),
    ),
    HesBatchRejected: st.builds(HesBatchRejected, batch_id=counts, reason=ids, detail=st.text(max_size=50)),
    HesResults: st.builds(HesResults, results=st.lists(results, max_size=5).map(tuple)),
    HesHeartbeat: st.builds(HesHeartbeat, seq=counts),
    HesReads: st.builds(HesReads, reads=st.lists(consumption, max_size=5).map(tuple)),
    HesError: st.builds(
        HesError, code=ids, detail=st.text(max_size=50), batch_id=st.none() | counts, fatal=st.booleans()
    ),
    HesInspect: st.builds(HesInspect, query_id=counts, meters=st.lists(ids, max_size=5).map(tuple)),
    HesPressButton: st.builds(HesPressButton, query_id=counts, meters=st.lists(ids, max_size=5).map(tuple)),
    HesInspection: st.builds(
        HesInspection, query_id=counts, states=st.lists(meter_states, max_size=5).map(tuple)
    ),
}
frames: st.SearchStrategy[HesFrame] = st.one_of(*FRAME_STRATEGIES.values())


def body(frame: HesFrame) -> bytes:
    return encode_frame(frame)[4:]


@given(frames)
def test_every_frame_type_round_trips(frame: HesFrame) -> None:
    decoded = decode_frame(body(frame))
    assert decoded == frame
    assert type(decoded) is type(frame)


def test_the_strategy_covers_every_frame_type() -> None:
    assert set(FRAME_STRATEGIES) == set(HesFrame.__args__)


def test_decoded_records_carry_enum_members_not_bare_ints() -> None:
    frame = HesResults(
        results=(
            HesCommandResult(
                "c/1", "MPW1", HesResultStatus.PROCESSED, HesControlState.CONNECTED, True, 2, None, 1.5
            ),
        )
    )
    decoded = decode_frame(body(frame))
    assert isinstance(decoded, HesResults)
    assert decoded.results[0].status is HesResultStatus.PROCESSED
    assert decoded.results[0].control_state is HesControlState.CONNECTED


def test_a_newer_peers_extra_trailing_fields_are_ignored() -> None:
    wire = msgpack.packb([7, 42, "a field from version 2"])
    assert decode_frame(wire) == HesHeartbeat(seq=42)
    cmd = msgpack.packb([3, 1, [["c", "m", 2, 5.0, "extra"]]])
    assert decode_frame(cmd) == HesSubmit(
        batch_id=1, commands=(HesCommand("c", "m", HesAction.CONNECT, 5.0),)
    )


def test_the_reference_wire_carries_no_credit_update() -> None:
    """A credit update (HesAction.CREDIT, issue 16) never crosses the reference protocol: its adapter fails
    it ``unsupported`` before sending, and a peer sending action 4 is answered malformed; a fifth field
    (a credit amount) is ignored like any newer trailing field."""
    with pytest.raises(FrameError, match="action: unknown value 4") as caught:
        decode_frame(msgpack.packb([3, 5, [["k", "m", int(HesAction.CREDIT), 5.0, 100]]]))
    assert caught.value.batch_id == 5
    frame = decode_frame(msgpack.packb([3, 1, [["c", "m", 2, 5.0, 100]]]))
    assert isinstance(frame, HesSubmit) and frame.commands[0].credit_paise is None


def test_an_integer_expiry_is_accepted_as_seconds() -> None:
    frame = decode_frame(msgpack.packb([3, 1, [["c", "m", 1, 1_700_000_000]]]))
    assert isinstance(frame, HesSubmit)
    assert frame.commands[0].expires_at == 1_700_000_000.0


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),  # never-used msgpack byte
        (msgpack.packb([]), "malformed"),
        (msgpack.packb({"tag": 1}), "malformed"),
        (msgpack.packb([99, 1]), "unknown_frame"),
        (msgpack.packb([7]), "malformed"),  # heartbeat without seq
        (msgpack.packb([7, -1]), "malformed"),
        (msgpack.packb([7, True]), "malformed"),  # bool is not an int here
        (msgpack.packb([7, 1.0]), "malformed"),
        (msgpack.packb([3, 1, [["c", "m", 9, 1.0]]]), "malformed"),  # unknown action
        (msgpack.packb([3, 1, [["c", "m", True, 1.0]]]), "malformed"),  # True == 1, still refused
        (msgpack.packb([3, 1, [["", "m", 1, 1.0]]]), "malformed"),
        (msgpack.packb([3, 1, [["c", "m", 1, math.inf]]]), "malformed"),
        (msgpack.packb([3, 1, [["c", "m", 1, math.nan]]]), "malformed"),
        (msgpack.packb([3, 1, [["c" * (MAX_ID_CHARS + 1), "m", 1, 1.0]]]), "malformed"),
        (msgpack.packb([3, 1, [["c", b"m", 1, 1.0]]], use_bin_type=True), "malformed"),
        (msgpack.packb([6, [["c", "m", 0, 1, "yes", 2, None, 1.0]]]), "malformed"),
        (msgpack.packb([6, [["c", "m", 0, 1, True, 9, None, 1.0]]]), "malformed"),
        (msgpack.packb([2, 1, "s", 10, 1, 0.0, 0.0]), "malformed"),  # max_frame_bytes too small
        (msgpack.packb([2, 1, "s", 4096, 1, -1.0, 0.0]), "malformed"),
        (msgpack.packb([7, 1]) + b"\x00", "malformed"),  # trailing garbage
    ],
)
def test_malformed_bodies_raise_frame_error_with_a_code(wire: bytes, code: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(wire)
    assert caught.value.code == code
    assert not caught.value.fatal
    assert isinstance(caught.value, ProtocolError)


def test_a_malformed_submit_names_its_batch() -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(msgpack.packb([3, 77, [["c", "m", 9, 1.0]]]))
    assert caught.value.batch_id == 77


def test_the_reader_splits_a_stream_fed_byte_by_byte() -> None:
    sent = [HesHeartbeat(seq=n) for n in range(5)] + [HesHello(client="x")]
    stream = encode_frames(sent)
    reader = HesFrameReader()
    got: list[HesFrame] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == sent
    assert reader.buffered == 0


def test_a_malformed_frame_is_skipped_and_the_stream_stays_in_sync() -> None:
    bad = b"\x00\x00\x00\x02\x91\x63"  # [99]: unknown tag, well framed
    reader = HesFrameReader()
    reader.feed(encode_frame(HesHeartbeat(seq=1)) + bad + encode_frame(HesHeartbeat(seq=2)))
    assert reader.next_frame() == HesHeartbeat(seq=1)
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert not caught.value.fatal
    assert reader.next_frame() == HesHeartbeat(seq=2)
    assert reader.next_frame() is None


def test_an_oversized_length_prefix_is_fatal_and_stays_fatal() -> None:
    reader = HesFrameReader(max_frame_bytes=1024)
    reader.feed((1025).to_bytes(4, "big") + b"x" * 10)
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert caught.value.fatal and caught.value.code == "too_large"
    reader.feed(encode_frame(HesHeartbeat(seq=1)))
    with pytest.raises(FrameError):
        reader.next_frame()


def test_a_frame_at_the_limit_is_read() -> None:
    frame = HesInspect(query_id=1, meters=tuple(f"MPW{i:08d}" for i in range(100)))
    data = encode_frame(frame)
    reader = HesFrameReader(max_frame_bytes=len(data) - 4)
    reader.feed(data)
    assert reader.next_frame() == frame
    assert DEFAULT_MAX_FRAME_BYTES >= 1024 * 1024


def test_version_negotiation_picks_the_highest_common_version() -> None:
    assert choose_version([1, 2, 3], [1, 2]) == 2
    assert choose_version([1], [1]) == 1
    assert choose_version([5, 6], [1]) is None
    assert choose_version([], [1]) is None


def test_batch_frames_print_in_constant_size() -> None:
    big = HesSubmit(
        batch_id=1, commands=tuple(HesCommand(f"c{i}", "m", HesAction.READ, 1.0) for i in range(1000))
    )
    assert repr(big) == "HesSubmit(batch_id=1, commands=<1000>)"


def valid_bodies() -> st.SearchStrategy[bytes]:
    return frames.map(body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except FrameError:
        pass


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(valid_bodies(), st.data())
def test_mutated_valid_frames_raise_only_frame_error(data: bytes, draw: st.DataObject) -> None:
    raw = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert", "swap"]))
        if op == "flip" and raw:
            i = draw.draw(st.integers(0, len(raw) - 1))
            raw[i] = draw.draw(st.integers(0, 255))
        elif op == "cut" and raw:
            i = draw.draw(st.integers(0, len(raw) - 1))
            del raw[i:]
        elif op == "insert":
            i = draw.draw(st.integers(0, len(raw)))
            raw[i:i] = draw.draw(st.binary(min_size=1, max_size=4))
        elif op == "swap" and len(raw) > 1:
            i = draw.draw(st.integers(0, len(raw) - 2))
            raw[i], raw[i + 1] = raw[i + 1], raw[i]
    try:
        decode_frame(bytes(raw))
    except FrameError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_bodies(), min_size=1, max_size=4), st.binary(max_size=64), st.integers(1, 50))
def test_a_stream_with_garbage_yields_frames_or_frame_errors_only(
    bodies: list[bytes], garbage: bytes, chunk: int
) -> None:
    stream = b"".join(len(b).to_bytes(4, "big") + b for b in bodies) + garbage
    reader = HesFrameReader(max_frame_bytes=4096)
    for i in range(0, len(stream), chunk):
        reader.feed(stream[i : i + chunk])
        while True:
            try:
                if reader.next_frame() is None:
                    break
            except FrameError as e:
                if e.fatal:
                    return


# --- consumption reads (tag 9, session 8) ----------------------------------------------------

_READ = HesRead("MPW00000001", "MPW00000001:2024-05-01", "2024-05-01", 8_250, None)


def test_a_reads_frame_round_trips_with_and_without_a_register() -> None:
    frame = HesReads(reads=(_READ, _READ._replace(read_id="r2", register_wh=1_234_567)))
    assert decode_frame(body(frame)) == frame
    assert repr(frame) == "HesReads(reads=<2>)"  # O(1), whatever the size


def test_a_truncated_reads_frame_is_a_frame_error_and_the_stream_goes_on() -> None:
    whole = encode_frame(HesReads(reads=(_READ,)))
    cut = len(whole[4:]) - 3
    reader = HesFrameReader()
    reader.feed(cut.to_bytes(4, "big") + whole[4 : 4 + cut] + encode_frame(HesHeartbeat(seq=5)))
    with pytest.raises(FrameError) as e:
        reader.next_frame()
    assert e.value.code == "malformed" and not e.value.fatal
    assert reader.next_frame() == HesHeartbeat(seq=5)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (["MPW1", "r", "2024-05-01"], "reads[]: expected"),
        (["MPW1", "r", "2024-5-1", 10], "day: expected an ISO date"),
        (["MPW1", "r", "2024-02-30", 10], "day: expected an ISO date"),
        (["MPW1", "r", "2024-05-01", -1], "energy_wh: -1 is outside"),
        (["MPW1", "r", "2024-05-01", 10_000_001], "energy_wh: 10000001 is outside"),
        (["MPW1", "r", "2024-05-01", 8.5], "energy_wh: expected int"),
        (["MPW1", "r", "2024-05-01", 10, -5], "register_wh"),
        (["", "r", "2024-05-01", 10], "serial: expected a non-empty str"),
        (["MPW1", 7, "2024-05-01", 10], "read_id: expected a non-empty str"),
    ],
)
def test_a_malformed_read_names_the_field(record: list[object], says: str) -> None:
    with pytest.raises(FrameError, match=re.escape(says)) as e:
        decode_frame(msgpack.packb([9, [record]]))
    assert e.value.code == "malformed"


def test_an_unknown_tag_is_unknown_frame_not_a_crash() -> None:
    # what a peer that predates a frame sees (an older client given HesReads answers this code)
    with pytest.raises(FrameError) as e:
        decode_frame(msgpack.packb([99, "anything"]))
    assert e.value.code == "unknown_frame" and not e.value.fatal
