"""The CIM adapter's messages (lxml + jodo's subset XSD) and its sans-I/O core: one outcome per command."""

from __future__ import annotations

import pytest

from headend.cim.core import CimCore, CimCoreConfig
from headend.cim.messages import (
    CimEvent,
    CimMessageError,
    EventResult,
    build_events,
    build_reply,
    build_request,
    paise_of_rupees,
    parse_events,
    parse_reply,
    parse_request,
    rupees,
    soap_wrap,
)
from headend.outcome import OutcomeKind
from protocols.headend import HesAction, HesCommand, HesControlState

NOW = 1_800_000_000.0
D, C, R = HesAction.DISCONNECT, HesAction.CONNECT, HesAction.READ


def cmd(i: int, action: HesAction = D, expires: float = NOW + 600) -> HesCommand:
    return HesCommand(f"c{i}", f"m{i}", action, expires)


def events(corr: str, *evs: CimEvent) -> bytes:
    return build_events(corr, list(evs), now=NOW, source="hes", message_id="ev-1")


def test_the_request_carries_the_codes_connexo_uses_and_round_trips_through_soap() -> None:
    body = build_request([cmd(1), cmd(2, C)], now=NOW, source="jodo", message_id="m1", correlation_id="k1",
                         reply_address="http://127.0.0.1:9/cb")
    assert b'ref="3.31.0.23"' in body and b'ref="3.31.0.18"' in body
    mid, corr, reply_to, commands = parse_request(soap_wrap(body))
    assert (mid, corr, reply_to) == ("m1", "k1", "http://127.0.0.1:9/cb")
    assert [(c.command_id, c.meter, c.action, c.expires_at) for c in commands] == [
        ("c1", "m1", D, NOW + 600), ("c2", "m2", C, NOW + 600)]


@pytest.mark.parametrize("bad, why", [
    (b"<nope", "well-formed"),
    (b'<ResponseMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header/></ResponseMessage>', "XSD"),
    (b'<Other xmlns="urn:x"/>', "expected a ResponseMessage"),
])
def test_a_bad_reply_is_refused_with_what_is_wrong(bad: bytes, why: str) -> None:
    with pytest.raises(CimMessageError, match=why):
        parse_reply(bad)


def test_an_event_message_is_not_taken_for_a_reply_and_an_entity_is_not_expanded() -> None:
    with pytest.raises(CimMessageError, match="expected a ResponseMessage"):
        parse_reply(events("k", CimEvent("c1", "m1", EventResult.PROCESSED, "Opened", None)))
    evil = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<r xmlns="http://iec.ch/TC57/2011/schema/message">&x;</r>')
    with pytest.raises(CimMessageError):
        parse_events(evil)


def test_accepted_then_processed_ends_with_the_contactor_read_back() -> None:
    core = CimCore(CimCoreConfig(), token="s3cret")
    (req,), early = core.prepare([cmd(1), cmd(2, C)], NOW)
    assert early == []
    reply = parse_reply(build_reply(req.correlation_id, "OK", [], now=NOW, source="hes", message_id="r"))
    assert core.on_reply(req.correlation_id, reply, NOW) == []
    out, refused = core.on_events(parse_events(events(
        req.correlation_id, CimEvent("c1", "m1", EventResult.PROCESSED, "Opened", None),
        CimEvent("c2", "m2", EventResult.PROCESSED, "Closed", None))), NOW + 1)
    assert refused == 0
    assert [(o.command_id, o.kind, o.control_state, o.output_state) for o in out] == [
        ("c1", OutcomeKind.DISCONNECTED, HesControlState.DISCONNECTED, False),
        ("c2", OutcomeKind.CONNECTED, HesControlState.CONNECTED, True)]
    assert core.pending == 0


def test_duplicate_late_and_unknown_events_are_refused_and_counted_never_a_second_outcome() -> None:
    core = CimCore(CimCoreConfig(callback_timeout=5.0))
    (req,), _ = core.prepare([cmd(1), cmd(2)], NOW)
    core.on_reply(req.correlation_id, parse_reply(build_reply(req.correlation_id, "OK", [], now=NOW,
                                                              source="h", message_id="r")), NOW)
    done = CimEvent("c1", "m1", EventResult.PROCESSED, "Opened", None)
    assert len(core.on_events(parse_events(events(req.correlation_id, done)), NOW)[0]) == 1
    assert core.on_events(parse_events(events(req.correlation_id, done)), NOW) == ([], 1)
    (timed_out,) = core.on_tick(NOW + 6)
    assert (timed_out.command_id, timed_out.error, timed_out.retryable) == ("c2", "timeout", True)
    late = CimEvent("c2", "m2", EventResult.PROCESSED, "Opened", None)
    assert core.on_events(parse_events(events(req.correlation_id, late)), NOW + 7) == ([], 1)
    stranger = CimEvent("c9", "m9", EventResult.PROCESSED, "Opened", None)
    assert core.on_events(parse_events(events(req.correlation_id, stranger)), NOW + 7) == ([], 1)
    s = core.stats
    assert (s.refused_duplicate, s.refused_late, s.refused_unknown, s.timeouts) == (1, 1, 1, 1)


def test_an_event_with_the_wrong_correlation_or_meter_does_not_end_the_command() -> None:
    core = CimCore()
    (req,), _ = core.prepare([cmd(1)], NOW)
    for ev, corr in [(CimEvent("c1", "m1", EventResult.PROCESSED, "Opened", None), "other"),
                     (CimEvent("c1", "mX", EventResult.PROCESSED, "Opened", None), req.correlation_id)]:
        assert core.on_events(parse_events(events(corr, ev)), NOW) == ([], 1)
    assert core.pending == 1


def test_failed_and_partial_replies_map_codes_to_final_or_retryable() -> None:
    core = CimCore(CimCoreConfig(retryable_codes=frozenset({"no_communication"})))
    (a,), _ = core.prepare([cmd(1)], NOW)
    (o,) = core.on_reply(a.correlation_id, parse_reply(build_reply(
        a.correlation_id, "FAILED", [("no_communication", None)], now=NOW, source="h", message_id="r")), NOW)
    assert (o.kind, o.error, o.retryable) == (OutcomeKind.FAILED, "no_communication", True)
    (b,), _ = core.prepare([cmd(2), cmd(3)], NOW)
    (o,) = core.on_reply(b.correlation_id, parse_reply(build_reply(
        b.correlation_id, "PARTIAL", [("2.4", "c3")], now=NOW, source="h", message_id="r")), NOW)
    assert (o.command_id, o.error, o.retryable) == ("c3", "2.4", False)
    assert core.pending == 1 and core.stats.accepted == 1


def test_transport_errors_retry_only_what_cannot_have_run_twice() -> None:
    core = CimCore(CimCoreConfig(callback_timeout=5.0))
    reqs, _ = core.prepare([cmd(1)], NOW)
    (o,) = core.on_transport_error(reqs[0].correlation_id, False, None, NOW)
    assert (o.error, o.retryable) == ("connection_lost", True)
    reqs, _ = core.prepare([cmd(2)], NOW)
    (o,) = core.on_transport_error(reqs[0].correlation_id, True, 503, NOW)
    assert (o.error, o.retryable) == ("no_communication", True)
    reqs, _ = core.prepare([cmd(3)], NOW)
    assert core.on_transport_error(reqs[0].correlation_id, True, None, NOW) == []  # may have run: wait
    ev = CimEvent("c3", "m3", EventResult.ERROR, None, "relay_stuck")
    (o,) = core.on_events(parse_events(events(reqs[0].correlation_id, ev)), NOW + 1)[0]
    assert (o.error, o.retryable) == ("relay_stuck", False)


def test_an_event_before_the_reply_wins_and_the_reply_is_then_ignored() -> None:
    core = CimCore()
    (req,), _ = core.prepare([cmd(1)], NOW)
    ev = CimEvent("c1", "m1", EventResult.EXPIRED, None, None)
    (o,) = core.on_events(parse_events(events(req.correlation_id, ev)), NOW)[0]
    assert o.kind is OutcomeKind.EXPIRED
    failed = parse_reply(build_reply(req.correlation_id, "FAILED", [("x", None)], now=NOW, source="h",
                                     message_id="r"))
    assert core.on_reply(req.correlation_id, failed, NOW) == []


def test_expired_read_and_resubmitted_commands_never_go_out_or_end_twice() -> None:
    core = CimCore(CimCoreConfig(max_batch=2))
    reqs, out = core.prepare([cmd(1, expires=NOW - 1), cmd(2, R), cmd(3), cmd(4), cmd(5)], NOW)
    assert [(o.command_id, o.kind, o.error) for o in out] == [
        ("c1", OutcomeKind.EXPIRED, None), ("c2", OutcomeKind.FAILED, "unsupported")]
    assert [r.command_ids for r in reqs] == [("c3", "c4"), ("c5",)]
    assert core.prepare([cmd(1), cmd(3)], NOW) == ([], [])


def test_the_callback_token_is_checked_and_refusals_counted() -> None:
    core = CimCore(token="s3cret")
    assert core.authentic("s3cret")
    assert not core.authentic("s3cre") and not core.authentic(None)
    assert not CimCore().authentic("anything")  # no token configured: nobody gets in
    assert core.stats.refused_unauthorised == 2


# --- credit updates (3.20.22.13, issue 16) ---------------------------------------------------------


def credit(i: int, paise: int) -> HesCommand:
    return HesCommand(f"k{i}", f"m{i}", HesAction.CREDIT, NOW + 600, paise)


@pytest.mark.parametrize("paise, text", [(0, "0.00"), (5, "0.05"), (123_456, "1234.56"), (-505, "-5.05"),
                                         (10**12, "10000000000.00")])
def test_paise_go_as_rupees_with_two_decimals_and_come_back_exactly(paise: int, text: str) -> None:
    assert rupees(paise) == text and paise_of_rupees(text) == paise


@pytest.mark.parametrize("bad", ["12.5", "12", "1e3", " 1.00", "1.000", "--1.00", "₹1.00", ""])
def test_a_credit_amount_that_is_not_rupees_with_two_decimals_is_refused(bad: str) -> None:
    with pytest.raises(CimMessageError, match="creditAmount"):
        paise_of_rupees(bad)


def test_a_credit_update_carries_its_balance_as_connexo_reads_it_and_round_trips() -> None:
    body = build_request([credit(1, 123_456), cmd(2)], now=NOW, source="jodo", message_id="m1",
                         correlation_id="k", reply_address="http://127.0.0.1:9/cb")
    assert b'ref="3.20.22.13"' in body
    assert b"<edc:name>creditType</edc:name><edc:value>Import Credit</edc:value>" in body
    assert b"<edc:name>creditAmount</edc:name><edc:value>1234.56</edc:value>" in body
    _, _, _, commands = parse_request(soap_wrap(body))
    assert [(c.command_id, c.action, c.credit_paise) for c in commands] == [
        ("k1", HesAction.CREDIT, 123_456), ("c2", D, None)]
    with pytest.raises(ValueError, match="without a balance"):
        build_request([HesCommand("k9", "m9", HesAction.CREDIT, NOW + 600)], now=NOW, source="jodo",
                      message_id="m", correlation_id="k", reply_address="http://127.0.0.1:9/cb")


@pytest.mark.parametrize("edit, why", [
    (lambda b: b.replace(b"<edc:value>Import Credit</edc:value>", b"<edc:value>Emergency Credit</edc:value>"),
     "creditType"),
    (lambda b: b.replace(b"1234.56", b"1234.5"), "creditAmount"),
    (lambda b: b.replace(b'ref="3.20.22.13"', b'ref="3.31.0.23"'), "takes no attributes"),
    (lambda b: b.replace(b"<edc:name>creditType</edc:name>", b"<edc:name>creditAmount</edc:name>"), "twice"),
    (lambda b: b.replace(b"<edc:name>creditType</edc:name>", b"<edc:name>tariff</edc:name>"), "XSD"),
])
def test_a_credit_update_without_exactly_its_two_attributes_is_refused(edit, why: str) -> None:  # type: ignore[no-untyped-def]
    body = build_request([credit(1, 123_456)], now=NOW, source="jodo", message_id="m1", correlation_id="k",
                         reply_address="http://127.0.0.1:9/cb")
    changed = edit(body)
    assert changed != body
    with pytest.raises(CimMessageError, match=why):
        parse_request(changed)


def test_a_processed_credit_update_ends_applied_and_a_switch_event_for_it_is_refused() -> None:
    core = CimCore(CimCoreConfig(), token="s3cret")
    (req,), early = core.prepare([credit(1, 500), credit(2, 700)], NOW)
    assert early == []
    core.on_reply(req.correlation_id, parse_reply(build_reply(req.correlation_id, "OK", [], now=NOW,
                                                              source="hes", message_id="r")), NOW)
    out, refused = core.on_events(parse_events(events(
        req.correlation_id,
        CimEvent("k1", "m1", EventResult.PROCESSED, None, None, "3.20.22"),
        CimEvent("k2", "m2", EventResult.PROCESSED, "Closed", None, "3.31.0"))), NOW + 1)  # not its kind
    assert [(o.command_id, o.kind, o.control_state) for o in out] == [("k1", OutcomeKind.APPLIED, None)]
    assert refused == 1 and core.stats.refused_unknown == 1 and core.pending == 1
    out, _ = core.on_events(parse_events(events(
        req.correlation_id, CimEvent("k2", "m2", EventResult.ERROR, None, "no_communication", "3.20.22"))),
        NOW + 2)
    assert [(o.kind, o.error, o.retryable) for o in out] == [(OutcomeKind.FAILED, "no_communication", True)]
