"""The msgpack codec: round trips, schema evolution and refusal of anything malformed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import codec
from protocols.codec import CodecError


class CodecSampleColour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@codec.message
@dataclass(frozen=True, slots=True, kw_only=True)
class CodecSampleInner:
    n: int
    label: str | None = None


@codec.message(version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class CodecSampleOuter:
    amount_paise: int
    colour: CodecSampleColour
    flag: bool
    blob: bytes
    inner: CodecSampleInner
    items: tuple[CodecSampleInner, ...] = ()
    pair: tuple[int, str] = (0, "")
    mode: Literal["a", "b"] = "a"
    added_in_v2: int = 7

    def __post_init__(self) -> None:
        if self.amount_paise < 0:
            raise ValueError("amount_paise must not be negative")


def pack(wire: object) -> bytes:
    return msgpack.packb(wire, default=codec.to_wire, use_bin_type=True)


def sample() -> CodecSampleOuter:
    return CodecSampleOuter(
        amount_paise=123_45,
        colour=CodecSampleColour.BLUE,
        flag=True,
        blob=b"\x00\xff",
        inner=CodecSampleInner(n=1, label="x"),
        items=(CodecSampleInner(n=2), CodecSampleInner(n=3, label="y")),
        pair=(5, "five"),
        mode="b",
    )


def test_message_round_trips_with_nested_enums_tuples_and_bytes() -> None:
    original = sample()
    assert codec.decode(codec.encode(original)) == original


def test_batch_round_trips_in_order() -> None:
    batch = [sample(), CodecSampleInner(n=9), sample()]
    assert codec.decode_many(codec.encode_many(batch)) == batch


def test_older_encoding_without_appended_fields_decodes_with_defaults() -> None:
    wire = codec.to_wire(sample())
    wire[1] = 1
    wire[2] = wire[2][:5]
    old = codec.decode(pack(wire))
    assert old.added_in_v2 == 7 and old.items == ()


def test_newer_schema_version_is_refused() -> None:
    wire = codec.to_wire(sample())
    wire[1] = 3
    with pytest.raises(CodecError, match="newer"):
        codec.decode(pack(wire))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda w: w.__setitem__(0, "NoSuchMessage"), "unknown message type"),
        (lambda w: w[2].__setitem__(0, "12"), "amount_paise: expected an integer"),
        (lambda w: w[2].__setitem__(0, 1.5), "amount_paise: expected an integer"),
        (lambda w: w[2].__setitem__(2, 1), "flag: expected a boolean"),
        (lambda w: w[2].__setitem__(1, "green"), "not a CodecSampleColour"),
        (lambda w: w[2].__setitem__(0, -5), "must not be negative"),
        (lambda w: w[2].__setitem__(7, "c"), "is not one of"),
        (lambda w: w.__setitem__(2, w[2][:2]), "field values"),
        (lambda w: w[2].__setitem__(4, ["CodecSampleOuter", 1, []]), "expected CodecSampleInner"),
    ],
)
def test_malformed_fields_are_refused_naming_the_field(mutate: object, message: str) -> None:
    wire = codec.to_wire(sample())
    wire[2][4] = codec.to_wire(wire[2][4])
    wire[2][5] = [codec.to_wire(i) for i in wire[2][5]]
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(CodecError, match=message):
        codec.decode(msgpack.packb(wire, use_bin_type=True))


def test_truncated_bytes_are_refused() -> None:
    data = codec.encode(sample())
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode(data[:cut])


def test_absurd_sizes_are_refused_before_parsing() -> None:
    with pytest.raises(CodecError, match="exceeds the limit"):
        codec.decode(b"\x00" * 2048, max_bytes=1024)
    # a header claiming a 4 GiB array inside a tiny buffer
    with pytest.raises(CodecError):
        codec.decode(b"\xdd\xff\xff\xff\xff")


def test_expect_refuses_another_message_type() -> None:
    with pytest.raises(CodecError, match="expected CodecSampleOuter"):
        codec.decode(codec.encode(CodecSampleInner(n=1)), expect=CodecSampleOuter)


def test_from_fields_builds_from_json_and_names_the_problem() -> None:
    built = codec.from_fields("CodecSampleInner", {"n": 4, "label": "z"})
    assert built == CodecSampleInner(n=4, label="z")
    with pytest.raises(CodecError, match="unknown fields"):
        codec.from_fields("CodecSampleInner", {"n": 4, "nope": 1})
    with pytest.raises(CodecError, match="missing fields"):
        codec.from_fields("CodecSampleInner", {})
    with pytest.raises(CodecError, match="unknown message type"):
        codec.from_fields("Nope", {})


def test_duplicate_class_names_are_refused_at_registration() -> None:
    @dataclass(frozen=True)
    class CodecSampleInner:  # same bare name as the registered one
        n: int

    with pytest.raises(TypeError, match=r"taken|already a message"):
        codec.message(CodecSampleInner)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except CodecError:
        pass


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_mutated_valid_messages_raise_only_codec_error(data: st.DataObject) -> None:
    encoded = bytearray(codec.encode_many([sample(), sample()]))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(encoded) - 1))
        if op == "flip":
            encoded[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            encoded.insert(pos, data.draw(st.integers(0, 255)))
        elif len(encoded) > 1:
            del encoded[pos]
    try:
        codec.decode_many(bytes(encoded))
    except CodecError:
        pass


def test_decode_each_keeps_good_items_and_names_the_bad_one() -> None:
    good = codec.to_wire(CodecSampleInner(n=1))
    bad = codec.to_wire(CodecSampleInner(n=2))
    bad[2][0] = "two"
    items = codec.decode_each(msgpack.packb([good, bad, good]))
    assert items[0] == CodecSampleInner(n=1) and items[2] == CodecSampleInner(n=1)
    assert isinstance(items[1], CodecError) and "[1]" in str(items[1])
