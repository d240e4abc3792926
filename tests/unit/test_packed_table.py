"""PackedTable (domain/packed.py): a logical shard's packed meters in flat buffers, as a dict would be."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.packed import PackedTable

accounts = st.text(alphabet="N0123456789é", min_size=1, max_size=12)
values = st.binary(min_size=1, max_size=80)
ops = st.lists(st.tuples(st.sampled_from(["put", "compact", "copy"]), accounts, values), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_a_table_answers_as_a_dict_whatever_was_assigned_and_compacted(
    steps: list[tuple[str, str, bytes]],
) -> None:
    table, model = PackedTable(), dict[str, bytes]()
    copies: list[tuple[PackedTable, dict[str, bytes]]] = []
    for op, account, value in steps:
        if op == "put":
            table[account] = value
            model[account] = value
        elif op == "compact":
            table.compact()
            assert table.hot == 0
        else:
            copies.append((table.copy(), dict(model)))
        assert len(table) == len(model)
    assert dict(table.items()) == model and sorted(table) == sorted(model)
    for account, value in model.items():
        assert table.get(account) == value and account in table
    assert table.get("absent") is None and "absent" not in table
    for copy, then in copies:  # a copy keeps what the table held when it was taken
        assert dict(copy.items()) == then


def test_a_compact_base_round_trips_through_its_bytes() -> None:
    table = PackedTable({f"N{i:010d}": bytes([i % 251 + 1]) * (i % 70 + 1) for i in range(3_000)})
    assert table.base() is None  # meters still hot
    table.compact()
    base = table.base()
    assert base is not None and table.hot == 0
    again = PackedTable.from_base(*base)
    assert dict(again.items()) == dict(table.items()) and len(again) == 3_000


def test_accounts_with_the_same_crc_are_told_apart() -> None:
    # "plumless" and "buckeroo" share a CRC-32 (a known collision)
    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")
    table = PackedTable({"plumless": b"one", "buckeroo": b"two"})
    table.compact()
    assert table.get("plumless") == b"one" and table.get("buckeroo") == b"two"
    table["buckeroo"] = b"three"
    table.compact()
    assert dict(table.items()) == {"plumless": b"one", "buckeroo": b"three"}


def test_values_that_do_not_fit_a_base_stay_hot() -> None:
    big, obj = b"x" * 70_000, ("a meter object",)
    table = PackedTable({"N1": big, "N2": obj, "N3": b"small"})
    table.compact()
    assert table.hot == 2 and table.base() is None
    assert table.get("N1") == big and table.get("N2") is obj and table.get("N3") == b"small"
    assert len(table) == 3


def test_a_base_whose_parts_disagree_is_refused() -> None:
    table = PackedTable({"N1": b"one", "N2": b"two"})
    table.compact()
    blob, hashes, offsets = table.base() or (b"", b"", b"")
    for bad in ((blob, hashes[4:], offsets), (blob[:3], hashes, offsets)):
        try:
            PackedTable.from_base(*bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_colliding_accounts_replaced_and_inserted_together_keep_one_record_each() -> None:
    for first, second in (("plumless", "buckeroo"), ("buckeroo", "plumless")):
        table = PackedTable({first: b"1", "N7": b"7"})
        table.compact()
        table[second] = b"2"  # inserted next to its twin
        table.compact()
        table[first], table[second], table["N8"] = b"3", b"4", b"8"  # both replaced at once
        table.compact()
        assert dict(table.items()) == {first: b"3", second: b"4", "N7": b"7", "N8": b"8"}
        base = table.base()
        assert len(table) == 4 and base is not None and len(base[1]) == 4 * 4  # four hashes
