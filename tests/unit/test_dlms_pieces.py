"""DLMS adapter pieces without sockets: wrapper framing, result codes, wPort addressing, the config table."""

from __future__ import annotations

from pathlib import Path

import pytest

from headend.dlms.codes import code_for_result
from headend.dlms.settings import DlmsSettings, load_address_book
from headend.dlms.wrapper import WrapperError, WrapperReader, wrap
from jodo.config import load_config
from jodo.errors import ConfigError
from protocols.headend import RETRYABLE_ERRORS


def test_the_wrapper_reader_splits_a_stream_cut_anywhere_into_apdus() -> None:
    stream = wrap(16, 300, b"\x61\x01\x02") + wrap(16, 300, b"") + wrap(1, 2, b"\xc4" * 70)
    for cut in range(len(stream) + 1):
        r = WrapperReader()
        got = []
        for part in (stream[:cut], stream[cut:]):
            r.feed(part)
            while (a := r.next_apdu()) is not None:
                got.append(a)
        assert got == [(16, 300, b"\x61\x01\x02"), (16, 300, b""), (1, 2, b"\xc4" * 70)]


def test_a_header_that_is_not_version_1_is_an_error() -> None:
    r = WrapperReader()
    r.feed(b"\x00\x02\x00\x10\x01\x2c\x00\x00")
    with pytest.raises(WrapperError):
        r.next_apdu()


@pytest.mark.parametrize(("result", "code", "retried"), [
    (1, "relay_stuck", False), (2, "no_communication", True), (3, "not_permitted", False),
    (4, "no_disconnector", False), (11, "no_disconnector", False), (13, "access_denied", False),
    (250, "dlms_other_reason", False), (77, "dlms_77", False),
])  # fmt: skip
def test_dlms_results_map_to_contract_codes_and_only_temporary_failure_is_retried(
    result: int, code: str, retried: bool
) -> None:
    assert code_for_result(result) == code
    assert (code in RETRYABLE_ERRORS) is retried


def test_a_serial_maps_to_base_plus_its_trailing_digits_and_others_are_unknown() -> None:
    s = DlmsSettings()
    assert s.wport("MPW00000042") == 298
    assert s.wport("NO-SUCH-METER") is None
    assert s.wport("MPW99999999") is None  # beyond 65535
    assert DlmsSettings(address_book={"X": 7}).wport("X") == 7
    assert DlmsSettings(address_book={"X": 7}).wport("MPW00000001") is None


def test_the_address_book_names_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("serial,wport\nA1,300\nB2,301\n")
    assert load_address_book(good) == {"A1": 300, "B2": 301}
    bad = tmp_path / "bad.csv"
    bad.write_text("A1,300\nB2,70000\n")
    with pytest.raises(ValueError, match=r"bad.csv:2"):
        load_address_book(bad)


def test_a_dlms_head_end_in_the_config_gives_gateway_options_and_never_shows_the_password(
    tmp_path: Path,
) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    f = tmp_path / "jodo.toml"
    f.write_text(
        '[[head_ends]]\nname = "hes-dlms"\nkind = "dlms"\nhost = "127.0.0.1"\nport = 4059\n'
        'dlms_password_file = "pw"\ndlms_pool_size = 8\n'
        '[[head_ends]]\nname = "hes-2"\nkind = "dlms"\nport = 4060\ndlms_password = "inline-pw"\n'
    )
    config = load_config(f, env={})
    a, b = config.head_ends
    oa, ob = a.dlms_options(), b.dlms_options()
    assert oa is not None and (oa.password, oa.pool_size, oa.wport_base) == ("from-a-file", 8, 256)
    assert ob is not None and ob.password == "inline-pw"
    assert "inline-pw" not in repr(config) and "inline-pw" not in repr(ob)


def test_a_reference_head_end_has_no_dlms_options_and_a_bad_dlms_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "jodo.toml"
    f.write_text('[[head_ends]]\nname = "h"\nkind = "reference"\nport = 9000\n')
    assert load_config(f, env={}).head_ends[0].dlms_options() is None
    f.write_text('[[head_ends]]\nname = "h"\nkind = "dlms"\nport = 9000\ndlms_pool_size = 0\n')
    with pytest.raises(ConfigError, match="dlms_pool_size"):
        load_config(f, env={})


def test_bridge_counters_become_dlms_event_metrics() -> None:
    from headend.dlms.bridge import BridgeStats, stats_events
    from telemetry import metrics

    before = BridgeStats(associations=3, refused=1)
    now = BridgeStats(associations=5, refused=1, response_timeouts=2, actions=9)
    assert stats_events(now, before) == [("association", 2), ("response_timeout", 2)]
    metrics.configure_labels(gateways=[], head_ends=["hes-dlms"])
    metrics.dlms_events("hes-dlms", "refused", 3)
    assert b'jodo_dlms_events_total{event="refused",head_end="hes-dlms"} 3.0' in metrics.render()
    with pytest.raises(ValueError, match="DLMS event"):
        metrics.dlms_events("hes-dlms", "nonsense")
