"""The snapshot body a shard group writes (actors/shard_snapshot.py): v3 round trips, v2 and v1 still load,
and a body this code cannot read is refused rather than half-read.

These bodies outlive releases (they are in every data directory), so the byte layout is pinned here:
a change that breaks these tests breaks recovery of existing data.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from actors import shard_snapshot
from domain.commands import ClearPayment, RegisterMeter
from domain.enums import RelayState
from domain.packed import PackedTable
from domain.policy import load_policy
from domain.shard import MeterHost, ShardImage
from domain.sharding import logical_shard
from protocols import codec
from protocols.codec import CodecError
from protocols.registry import METER_FLAT, METER_PACKING
from tests.unit.test_meter_support import at

POLICY = load_policy()
RULES = shard_snapshot.rules_fingerprint(POLICY)
T0 = at(2026, 3, 2, 11)
ACCOUNT = "N0000000007"
SHARD = logical_shard(ACCOUNT)


def image() -> ShardImage:
    """One logical shard with a meter disconnected and owing, and one paid up with a connect pending."""
    host = MeterHost(POLICY, packing=METER_PACKING)
    candidates = (f"N{i:010d}" for i in range(2_000))
    others = [a for a in candidates if logical_shard(a) == SHARD and a != ACCOUNT][:1]
    host.assign(host.step([
        RegisterMeter(account=a, serial=f"S{a}", head_end="hes-1", install_year=2022, relay_capable=True,
                      control_mode=2, relay=RelayState.DISCONNECTED, opening_dues_paise=150_000)
        for a in [ACCOUNT, *others]
    ], T0), T0)
    host.assign(host.step([ClearPayment(account=ACCOUNT, payment_id="P1", amount_paise=150_000,
                                        channel="upi", cashless=True, paid_at=T0)], T0), T0)
    return host.image(SHARD)


def fields(body: bytes) -> dict[str, Any]:
    tag, version, values = msgpack.unpackb(body)
    assert (tag, version) == ("jodo.shard-image", 3)
    return values  # type: ignore[no-any-return]


def v2_body(original: ShardImage) -> bytes:
    """What 3981ff4 wrote: the meters as two arrays in step, not a compact table."""
    values = {k: v for k, v in fields(shard_snapshot.dump(original, RULES)).items() if k != "base"}
    values["accounts"], values["meters"] = list(original.meters), list(original.meters.values())
    return msgpack.packb(["jodo.shard-image", 2, values], use_bin_type=True)  # type: ignore[no-any-return]


def test_a_v3_body_round_trips_the_image() -> None:
    original = image()
    assert original.pending == {ACCOUNT} and set(original.paid_off) == {ACCOUNT} and original.timers
    loaded = shard_snapshot.load(shard_snapshot.dump(original, RULES), SHARD, RULES)
    assert loaded == original
    assert isinstance(loaded, ShardImage) and isinstance(loaded.meters, PackedTable)
    assert loaded.meters.hot == 0  # every meter in the compact base: no object per meter


def test_a_v3_body_is_a_tagged_map_of_named_fields_holding_the_resident_bytes() -> None:
    original = image()
    values = fields(shard_snapshot.dump(original, RULES))
    assert set(values) == {"versions", "rules", "base", "relay", "work_orders", "paid_off",
                           "pending", "timers", "prepaid_bands"}
    # the table's base as the host holds it (nothing packed again): records, hashes, offsets
    assert isinstance(original.meters, PackedTable)
    assert values["base"] == list(original.meters.base() or ())
    assert dict(PackedTable.from_base(*values["base"]).items()) == dict(original.meters.items())
    assert dict(zip(*values["timers"], strict=True)) == original.timers
    assert values["versions"] == METER_FLAT.versions and values["rules"] == RULES
    assert values["relay"] == {"connecting": 1, "disconnected": 1} and values["pending"] == [ACCOUNT]


def test_a_v2_body_still_loads_its_meters_as_they_were() -> None:
    original = image()
    loaded = shard_snapshot.load(v2_body(original), SHARD, RULES)
    assert loaded == original
    host = MeterHost(POLICY, packing=METER_PACKING)
    assert isinstance(loaded, ShardImage)
    host.load(loaded)
    assert host.image(SHARD) == original  # and the next image is compact again
    again = host.image(SHARD).meters
    assert isinstance(again, PackedTable) and again.hot == 0


def test_a_v1_body_loads_as_meters() -> None:
    host = MeterHost(POLICY, packing=METER_PACKING)
    original = image()
    host.load(original)
    meters = list(host.shard_meters(SHARD))
    loaded = shard_snapshot.load(codec.encode_many(meters), SHARD, RULES)
    assert loaded == meters
    assert shard_snapshot.load(codec.encode_many([]), SHARD, RULES) == []


def test_a_body_of_other_rules_loads_as_meters_to_count_again() -> None:
    original = image()
    loaded = shard_snapshot.load(shard_snapshot.dump(original, "0:other"), SHARD, RULES)
    assert isinstance(loaded, list)
    assert sorted(m.account for m in loaded) == sorted(original.meters)


def test_unknown_fields_are_ignored() -> None:
    values = fields(shard_snapshot.dump(image(), RULES))
    values["added_later"] = [1, 2, 3]
    body = msgpack.packb(["jodo.shard-image", 3, values], use_bin_type=True)
    assert shard_snapshot.load(body, SHARD, RULES) == image()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: ["jodo.shard-image", 4, v], "newer"),
        (lambda v: ["jodo.shard-image", 3, {**v, "versions": {"Meter": 99}}], "schema version 99"),
        (lambda v: ["jodo.shard-image", 3, {k: x for k, x in v.items() if k != "timers"}], "malformed"),
        (lambda v: ["jodo.shard-image", 3, {**v, "relay": {"flapping": 1}}], "malformed"),
        (lambda v: ["jodo.shard-image", 3, {**v, "base": [v["base"][0], v["base"][1][4:], v["base"][2]]}],
         "malformed"),
        (lambda v: ["jodo.shard-image", 3, {**v, "base": [v["base"][0][:1], *v["base"][1:]]}], "malformed"),
        (lambda v: ["jodo.shard-image", 2, {**{k: x for k, x in v.items() if k != "base"},
                                            "accounts": ["N1", "N2"], "meters": [b"x"]}], "malformed"),
    ],
)
def test_a_body_this_code_cannot_read_is_refused(change: object, message: str) -> None:
    values = fields(shard_snapshot.dump(image(), RULES))
    body = msgpack.packb(change(values), use_bin_type=True)  # type: ignore[operator]
    with pytest.raises(CodecError, match=message):
        shard_snapshot.load(body, SHARD, RULES)


def test_truncated_bodies_are_refused() -> None:
    body = shard_snapshot.dump(image(), RULES)
    for cut in (len(body) // 3, len(body) - 1):
        with pytest.raises(CodecError):
            shard_snapshot.load(body[:cut], SHARD, RULES)


#: `shard_snapshot.dump` by main at 3e61e5b (before prepaid meters, issue 16) of logical shard 78 of 256
#: with one meter, N1, billed Rs 1,234.56: the v3 body every data directory of that release holds.
_BEFORE_PREPAID = (
    "93b06a6f646f2e73686172642d696d6167650388a876657273696f6e7386a54d6574657201ac4d6574657250726f66696c6501a9"
    "42696c6c537461746501a94d657465724361736501b350656e64696e6752656c6179436f6d6d616e6401ae4669656c64576f72"
    "6b4f7264657201a572756c6573b2313a65383538646536303638393538343936a46261736593c442024e313d0099a253319"
    "4a56865732d61cd07e6c302a9636f6e6e6563746564a9636f6e6e6563746564ce0001e24096a24231ce0001e240ce6b1aefa8"
    "c2c2c0c00090c4044e70fd7ec40400000000a572656c617981a9636f6e6e656374656401ab776f726b5f6f726465727380a870"
    "6169645f6f666680a770656e64696e6790a674696d6572739291a24e3191ce6b1aefa8"
)


def test_a_body_written_before_prepaid_meters_loads_them_as_postpaid() -> None:
    loaded = shard_snapshot.load(bytes.fromhex(_BEFORE_PREPAID), 78, RULES)
    assert isinstance(loaded, ShardImage), "same rules: the image itself, nothing recounted"
    host = MeterHost(POLICY, packing=METER_PACKING)
    host.load(loaded)
    m = host.get("N1")
    assert m is not None and m.prepaid is None and m.dues_paise == 123_456 and m.bill is not None


def test_prepaid_meters_and_their_balance_bands_survive_a_snapshot() -> None:
    from domain.commands import ReportConsumption, SetBillingMode
    from domain.enums import BillingMode

    host = MeterHost(POLICY, packing=METER_PACKING)
    host.assign(host.step([
        RegisterMeter(account=ACCOUNT, serial="S7", head_end="hes-1", install_year=2022, relay_capable=True,
                      control_mode=2),
        SetBillingMode(account=ACCOUNT, mode=BillingMode.PREPAID, opening_balance_paise=60_000,
                       request_id="m1"),
        ReportConsumption(account=ACCOUNT, read_id="r1", read_date="2026-03-01", energy_wh=5_000),
    ], T0), T0)
    assert host.prepaid_bands == {"500_plus": 1}
    loaded = shard_snapshot.load(shard_snapshot.dump(host.image(SHARD), RULES), SHARD, RULES)
    assert isinstance(loaded, ShardImage) and loaded.prepaid_bands == {"500_plus": 1}
    again = MeterHost(POLICY, packing=METER_PACKING)
    again.load(loaded)
    m = again.get(ACCOUNT)
    assert m is not None and m.prepaid is not None and [d.read_id for d in m.prepaid.days] == ["r1"]
    assert again.prepaid_bands == {"500_plus": 1} and m == host.get(ACCOUNT)
