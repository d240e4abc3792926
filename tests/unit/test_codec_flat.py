"""The flat codec (resident records): round trips, the key left out, older forms, refusals."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Literal

import msgpack
import pytest

from domain.commands import ClearPayment, PostBill, RegisterMeter
from domain.enums import RelayState, WorkOrderAction
from domain.meter import handle
from domain.policy import load_policy
from domain.state import FieldWorkOrder, Meter
from protocols import codec
from protocols.codec import CodecError
from protocols.registry import METER_FLAT
from tests.unit.test_meter_support import at

POLICY = load_policy()
T0 = at(2026, 1, 5, 10)


class FlatSampleColour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@codec.message
@dataclass(frozen=True, slots=True, kw_only=True)
class FlatSampleInner:
    n: int
    label: str | None = None


@codec.message(version=2)
@dataclass(frozen=True, slots=True, kw_only=True)
class FlatSampleOuter:
    amount_paise: int
    colour: FlatSampleColour
    flag: bool
    blob: bytes
    inner: FlatSampleInner
    maybe: FlatSampleInner | None = None
    items: tuple[FlatSampleInner, ...] = ()
    pair: tuple[int, str] = (0, "")
    mode: Literal["a", "b"] = "a"
    added_in_v2: int = 7


@codec.message
@dataclass(frozen=True, slots=True, kw_only=True)
class FlatSampleOther:
    n: int


@codec.message
@dataclass(frozen=True, slots=True, kw_only=True)
class FlatSampleEither:
    key: str
    one: FlatSampleInner | FlatSampleOther | None = None


def sample() -> FlatSampleOuter:
    return FlatSampleOuter(
        amount_paise=123_45,
        colour=FlatSampleColour.BLUE,
        flag=True,
        blob=b"\x00\xff",
        inner=FlatSampleInner(n=1, label="x"),
        maybe=FlatSampleInner(n=4),
        items=(FlatSampleInner(n=2), FlatSampleInner(n=3, label="y")),
        pair=(5, "five"),
        mode="b",
    )


def meter(relay: RelayState = RelayState.DISCONNECTED, dues: int = 150_000) -> Meter:
    m, _, _ = handle(None, RegisterMeter(account="N0000000001", serial="S1", head_end="hes-a",
                                         install_year=2022, relay_capable=True, control_mode=2,
                                         relay=relay, opening_dues_paise=dues), T0, POLICY)
    assert m is not None
    return m


def test_a_record_round_trips_flat_with_nested_records_enums_tuples_and_bytes() -> None:
    flat = codec.flat_codec(FlatSampleOuter)
    original = sample()
    data = flat.pack(original)
    assert flat.unpack(data) == original
    assert b"FlatSample" not in data  # no tags
    assert flat.versions == {"FlatSampleOuter": 2, "FlatSampleInner": 1}
    assert flat.unpack(flat.pack(replace(original, maybe=None, items=()))).maybe is None


def test_a_meter_packs_without_its_account_and_unpacks_under_it() -> None:
    m = meter()
    data = METER_FLAT.pack(m)
    assert b"N0000000001" not in data and b"Meter" not in data
    assert METER_FLAT.unpack("N0000000001", data) == m
    assert METER_FLAT.unpack("N9", data) == replace(m, account="N9")


def test_a_meter_with_a_bill_payments_a_command_and_a_work_order_round_trips() -> None:
    m = meter()
    m, _, _ = handle(m, PostBill(account=m.account, bill_id="B1", amount_paise=40_000, due_date="2026-01-20",
                                 issued_at=T0), T0, POLICY)
    assert m is not None
    m, _, _ = handle(m, ClearPayment(account=m.account, payment_id="P1", amount_paise=190_000, channel="upi",
                                     cashless=True, paid_at=T0), T0, POLICY)
    assert m is not None and m.pending is not None and m.recent_payment_ids == ("P1",)
    assert METER_FLAT.unpack(m.account, METER_FLAT.pack(m)) == m
    assert m.case is not None
    order = FieldWorkOrder(work_order_id="W1", action=WorkOrderAction.RECONNECT)
    with_order = replace(m, case=replace(m.case, work_order=order))
    assert METER_FLAT.unpack(m.account, METER_FLAT.pack(with_order)) == with_order


def test_unpacked_meters_share_their_profile_as_restored_ones_do() -> None:
    a = METER_FLAT.unpack("N1", METER_FLAT.pack(meter()))
    b = METER_FLAT.unpack("N2", METER_FLAT.pack(meter()))
    assert a.profile is b.profile


def test_an_older_flat_form_without_appended_fields_unpacks_with_defaults() -> None:
    flat = codec.flat_codec(FlatSampleOuter)
    values = msgpack.unpackb(flat.pack(sample()))
    values[4] = [5]  # the inner record as an older schema wrote it: no label yet
    older = flat.unpack(msgpack.packb(values[:5]))  # and the outer one without its appended fields
    assert older.inner == FlatSampleInner(n=5) and older.items == () and older.added_in_v2 == 7
    assert older.colour is FlatSampleColour.BLUE


def test_flat_forms_of_a_newer_or_unknown_schema_are_refused() -> None:
    flat = codec.flat_codec(FlatSampleOuter)
    flat.check_versions({"FlatSampleOuter": 2, "FlatSampleInner": 1})
    flat.check_versions({"FlatSampleOuter": 1})
    with pytest.raises(CodecError, match="FlatSampleInner schema version 2"):
        flat.check_versions({"FlatSampleInner": 2})
    with pytest.raises(CodecError, match="NoSuchRecord"):
        flat.check_versions({"NoSuchRecord": 1})


def test_malformed_flat_bytes_are_a_codec_error() -> None:
    data = METER_FLAT.pack(meter())
    for bad in (b"", b"\xc1", data[: len(data) // 2], msgpack.packb(["S1", "not a profile"])):
        with pytest.raises(CodecError):
            METER_FLAT.unpack("N1", bad)


def test_a_union_of_records_has_no_flat_form() -> None:
    with pytest.raises(TypeError, match="union of records"):
        codec.flat_codec(FlatSampleEither)


def test_the_key_must_be_the_first_field() -> None:
    with pytest.raises(TypeError, match="first field"):
        codec.flat_codec(Meter, key="serial")
