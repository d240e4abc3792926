"""`DlmsAssociation` on dlms-cosem 21.3.2, sans-I/O, against known bytes.

The answers marked "Gurux" were captured once from the Gurux 1.0.203 server in `headend/dlms_sim`
(`MeterServer` + `handle`, in-process) answering this class's own requests: an independent DLMS stack.
The others are hand-encoded from the xDLMS ASN.1 of IEC 62056-5-3 (Get-Response, Action-Response,
ExceptionResponse; A-XDR) for the errors the simulator cannot be made to send. The requests are
checked byte for byte (an upgrade or downgrade of dlms-cosem that changes an encoding fails here).
"""

from __future__ import annotations

import logging

import pytest

from headend.dlms.association import (
    ActionDone,
    Associated,
    DlmsAssociation,
    ProtocolFault,
    ReadDone,
    Refused,
    Released,
    quiet_dlms_cosem_logs,
)
from headend.dlms.wrapper import WrapperReader, wrap

H = bytes.fromhex
# AARE accepted, LLS: result accepted(0), result-source-diagnostic acse-service-user null(0) (Gurux)
AARE_OK = H("6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000125dffff0007")
# AARE rejected-permanent(1), acse-service-user authentication-failure(13): a wrong password (Gurux)
AARE_BAD_PW = H("6129a109060760857405080101a203020101a305a10302010dbe10040e0800065f1f040000125dffff0007")
# AARE_OK with result rejected-transient(2), acse-service-user no-reason-given(1) (hand-encoded)
AARE_TRANSIENT = H("6129a109060760857405080101a203020102a305a103020101be10040e0800065f1f040000125dffff0007")
# ACTION disconnect (method 1) and its GET-with-list read-back, as this class encodes them
ACTION_1 = H("c301c00046000060030aff01010f00")
GET_2_3_4 = H("c003c1030046000060030aff02000046000060030aff03000046000060030aff0400")
DIAG = "AcseServiceUserDiagnostics"
RLRQ = H("6215800100be10040e01000000065f1f040000125dffff")


def _apdu(frame: bytes) -> tuple[int, int, bytes]:
    r = WrapperReader()
    r.feed(frame)
    got = r.next_apdu()
    assert got is not None and r.next_apdu() is None
    return got


def _associated(password: bytes | None = b"lls-pw-1") -> DlmsAssociation:
    a = DlmsAssociation(client_wport=16, server_wport=257, password=password)
    a.aarq()
    assert a.on_bytes(wrap(1, 16, AARE_OK)) == [Associated()]
    return a


def test_the_aarq_proposes_lls_with_the_password_or_no_mechanism_without_one() -> None:
    src, dst, lls = _apdu(DlmsAssociation(client_wport=16, server_wport=257, password=b"lls-pw-1").aarq())
    assert (src, dst) == (16, 257)
    # application-context LN no ciphering; calling-AP-title "uti" + 5 random bytes (not checked)
    assert lls.startswith(H("6042a109060760857405080101a60a0408757469"))
    # sender-acse-requirements authentication; mechanism-name LLS (2.16.756.5.8.2.1); the password;
    # user-information: InitiateRequest, DLMS version 6, proposed conformance 20 52 5f, max PDU 65535
    assert lls[25:] == H("8a0207808b0760857405080201ac0a80086c6c732d70772d31"
                         "be10040e01000000065f1f040020525fffff")  # fmt: skip
    none = _apdu(DlmsAssociation(client_wport=16, server_wport=257, password=None).aarq())[2]
    assert none.startswith(H("6029a109060760857405080101a60a0408757469"))
    assert none[25:] == H("be10040e01000000065f1f040020525fffff")  # no mechanism-name, no password


def test_a_switch_a_read_back_and_a_release_round_trip_on_gurux_answers() -> None:
    a = _associated()
    assert _apdu(a.action(1))[2] == ACTION_1
    waiting = a.busy
    assert a.on_bytes(wrap(257, 16, H("c701c00000"))) == [ActionDone(0)]  # Gurux: success
    assert waiting and not a.busy
    assert _apdu(a.action(2))[2] == H("c301c00046000060030aff02010f00")
    assert a.on_bytes(wrap(257, 16, H("c701c00000"))) == [ActionDone(0)]
    assert _apdu(a.read())[2] == GET_2_3_4
    # Gurux: boolean false, enum 0 (disconnected), enum 2 (control mode 2)
    assert a.on_bytes(wrap(257, 16, H("c403c103000300001600001602"))) == [ReadDone(False, 0, 2)]
    assert _apdu(a.rlrq())[2] == RLRQ
    assert a.on_bytes(wrap(257, 16, H("6315800100be10040e0800065f1f040000125dffff0007"))) == [Released()]


def test_an_answer_cut_anywhere_completes_once() -> None:
    a = _associated()
    a.action(1)
    frame = wrap(257, 16, H("c701c00000"))
    assert a.on_bytes(frame[:3]) == [] and a.on_bytes(frame[3:9]) == []
    assert a.on_bytes(frame[9:]) == [ActionDone(0)]


@pytest.mark.parametrize(("aare", "reply"), [
    (AARE_BAD_PW, Refused(False, f"REJECTED_PERMANENT/<{DIAG}.AUTHENTICATION_FAILED: 13>")),
    (AARE_TRANSIENT, Refused(True, f"REJECTED_TRANSIENT/<{DIAG}.NO_REASON_GIVEN: 1>")),
    # ExceptionResponse state-error service-not-allowed(1), service-error 2 (hand-encoded)
    (H("d80102"), Refused(True, "exception <ServiceException.SERVICE_NOT_SUPPORTED: 2>")),
])  # fmt: skip
def test_a_refused_association_says_whether_it_is_worth_trying_again(aare: bytes, reply: Refused) -> None:
    a = DlmsAssociation(client_wport=16, server_wport=257, password=b"wrong")
    a.aarq()
    assert a.on_bytes(wrap(257, 16, aare)) == [reply]


@pytest.mark.parametrize(("answer", "result"), [
    ("c701c00300", 3),  # Gurux: read-write-denied, control mode 0 forbids remote_disconnect
    ("c701c00100", 1),  # Gurux: hardware-fault, a stuck relay that says so
    ("c701c103010103", 3),  # hand: result 3 with return-parameters data-access-result 3 (WithError)
])  # fmt: skip
def test_an_action_error_is_its_result_number(answer: str, result: int) -> None:
    a = _associated()
    a.action(1)
    assert a.on_bytes(wrap(257, 16, H(answer))) == [ActionDone(result)]


@pytest.mark.parametrize(("answer", "reply"), [
    ("c403c103000301001601001603", ReadDone(True, 1, 3)),
    ("c403c103000300010b001602", ActionDone(11)),  # item 2 is data-access-result object-unavailable
    ("c401c10104", ActionDone(4)),  # Get-Response-Normal, data-access-result object-undefined
    ("d80102", ActionDone(2)),  # ExceptionResponse: temporary failure, read again
    ("c403c102000300001601", ProtocolFault("GET with list answered 2 items, not 3")),
    ("c403c103000900001600001602", ProtocolFault("class 70 attributes 2-4 are not boolean, enum, enum")),
    ("c403c103000300001600001607", ProtocolFault("control_state 0 / control_mode 7 out of range")),
])  # fmt: skip
def test_a_read_back_answer_becomes_the_relay_state_an_error_or_a_fault(
    answer: str, reply: ReadDone | ActionDone | ProtocolFault
) -> None:
    a = _associated()
    a.read()
    assert a.on_bytes(wrap(257, 16, H(answer))) == [reply]


def test_what_dlms_cosem_cannot_parse_is_a_fault_except_an_rlre_and_the_association_goes_on() -> None:
    a = _associated()
    a.action(1)
    # an ExceptionResponse to an ACTION: dlms-cosem's state machine (21.3.2 and 25.1.0 alike) refuses
    # it, so the answer is not understood, the bridge closes the link and the core reads the relay
    (fault,) = a.on_bytes(wrap(257, 16, H("d80102")))
    assert isinstance(fault, ProtocolFault) and fault.why.startswith("action: LocalDlmsProtocolError")
    b = _associated()
    b.rlrq()
    assert b.on_bytes(wrap(257, 16, H("ff00"))) == [Released()]  # we hang up after it anyway
    c = DlmsAssociation(client_wport=16, server_wport=257, password=None)
    c.aarq()
    (fault,) = c.on_bytes(wrap(257, 16, H("61020000")))
    assert isinstance(fault, ProtocolFault) and fault.why.startswith("aare: ValueError")


def test_one_request_at_a_time_and_no_answer_without_a_request() -> None:
    a = _associated()
    a.action(1)
    with pytest.raises(RuntimeError, match="still awaited on wPort 257"):
        a.read()
    a.on_bytes(wrap(257, 16, H("c701c00000")))
    assert a.on_bytes(wrap(257, 16, H("c701c00000"))) == [ProtocolFault("an answer nobody asked for")]
    bad = DlmsAssociation(client_wport=16, server_wport=257, password=None)
    assert bad.on_bytes(H("0002001001010000")) == [ProtocolFault("wrapper version 2, expected 1")]


def test_dlms_cosem_never_logs_the_password_and_is_quiet_unless_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loggers = [logging.getLogger(n) for n in ("dlms_cosem", "dlms_cosem.connection", "dlms_cosem.state")]
    before = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.NOTSET)
        quiet_dlms_cosem_logs()
        with caplog.at_level(logging.DEBUG):  # the process logs everything at DEBUG
            _associated(b"secret-pw").action(1)
        assert not [r for r in caplog.records if r.name.startswith("dlms_cosem")]
        caplog.clear()
        loggers[0].setLevel(logging.DEBUG)  # someone asked for dlms_cosem's lines, all of them
        quiet_dlms_cosem_logs()
        with caplog.at_level(logging.DEBUG):
            _associated(b"secret-pw").action(1)
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("dlms_cosem")]
        assert any("state transitioned" in line for line in lines)
        assert not [line for line in lines if "secret-pw" in line or "Sending" in line]
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)


def test_dlms_cosem_still_checks_the_order_of_requests() -> None:
    from dlms_cosem.exceptions import LocalDlmsProtocolError

    a = DlmsAssociation(client_wport=16, server_wport=257, password=None)
    with pytest.raises(LocalDlmsProtocolError, match="NO_ASSOCIATION"):
        a.action(1)  # no AARQ yet
    b = _associated()
    b.rlrq()
    b.on_bytes(wrap(257, 16, H("6315800100be10040e0800065f1f040000125dffff0007")))
    with pytest.raises(LocalDlmsProtocolError, match="NO_ASSOCIATION"):
        b.read()  # released
