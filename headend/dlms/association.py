"""One DLMS/COSEM association with one meter (logical device), sans-I/O, on dlms-cosem's `DlmsConnection`.

dlms-cosem 21.3.2, the last release under the MIT licence (24.1.0 and later ship a Business Source
License 1.1 LICENSE file: docs/dlms.md). Its APDU codecs (AARQ/AARE, ACTION, GET, RLRQ/RLRE) are
byte-for-byte the ones 25.1.0 has; what differs is how the authentication is given
(`authentication_method` + `password` on the connection, not a `security.*Authentication` object) and
that it logs through the standard `logging` module, not structlog.

dlms-cosem is sans-I/O at the APDU level (`DlmsConnection.send(apdu) -> bytes`, `receive_data`,
`next_event`); its `DlmsClient` is a blocking wrapper around it, not used here. This class adds the TCP
wrapper and turns the answers into the few results the bridge needs:

- `aarq()` → bytes; `on_bytes` then yields `Associated` or `Refused(transient, why)` (AARE).
- `action(method)` → ACTION-Request class 70 method 1 (remote_disconnect) / 2 (remote_reconnect) with
  integer(0); yields `ActionDone(result)` (0 = success).
- `read()` → one GET-Request-With-List for attributes 2 output_state, 3 control_state, 4 control_mode;
  yields `ReadDone(output_state, control_state, control_mode)` or `ActionDone(result)` for an error.
- `rlrq()` → RLRQ; yields `Released` (an RLRE we cannot parse counts as released too: we hang up after it).

Authentication: none or LLS (lowest-level password). HLS-GMAC needs ciphered APDUs and a per-meter key
store: not built (docs/dlms.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dlms_cosem import cosem, dlms_data, enumerations
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.exceptions import LocalDlmsProtocolError
from dlms_cosem.protocol import acse, xdlms

from headend.dlms.wrapper import WrapperReader, wrap

__all__ = [
    "DISCONNECTOR",
    "ActionDone",
    "Associated",
    "DlmsAssociation",
    "DlmsReply",
    "ProtocolFault",
    "ReadDone",
    "Refused",
    "Released",
    "quiet_dlms_cosem_logs",
]

DISCONNECTOR = cosem.Obis(0, 0, 96, 3, 10, 255)  # research/domain.md §1.1
_DC = enumerations.CosemInterface.DISCONNECT_CONTROL  # 70
_INTEGER_0 = b"\x0f\x00"  # A-XDR integer(0): the parameter of both methods
_READBACK = [
    cosem.CosemAttributeWithSelection(cosem.CosemAttribute(_DC, DISCONNECTOR, a), None) for a in (2, 3, 4)
]


def quiet_dlms_cosem_logs() -> None:
    """dlms-cosem 21.3.2 logs every APDU it sends on `logging.getLogger("dlms_cosem.connection")`: the
    request's repr at INFO and DEBUG (the AARQ's has the LLS password in it), and a deciphered APDU at
    WARNING. That logger is kept at ERROR whatever the process configured, so no log level puts a
    password in the logs; the other `dlms_cosem` loggers (state transitions) at WARNING unless someone
    set their level."""
    logging.getLogger("dlms_cosem.connection").setLevel(logging.ERROR)
    log = logging.getLogger("dlms_cosem")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Associated:
    pass


@dataclass(frozen=True, slots=True)
class Refused:
    transient: bool
    why: str


@dataclass(frozen=True, slots=True)
class ActionDone:
    result: int  # 0 success, else a DLMS Action-Result / Data-Access-Result number


@dataclass(frozen=True, slots=True)
class ReadDone:
    output_state: bool
    control_state: int
    control_mode: int


@dataclass(frozen=True, slots=True)
class Released:
    pass


@dataclass(frozen=True, slots=True)
class ProtocolFault:
    why: str  # an answer we could not understand: close the connection


DlmsReply = Associated | Refused | ActionDone | ReadDone | Released | ProtocolFault


class DlmsAssociation:
    """The client end of one association. One request at a time (DLMS confirmed services)."""

    def __init__(self, *, client_wport: int, server_wport: int, password: bytes | None) -> None:
        self.client_wport = client_wport
        self.server_wport = server_wport
        # AARQ mechanism-name: NONE (0) or LLS (1) with the password as calling-authentication-value
        mech = enumerations.AuthenticationMechanism
        mechanism = mech.LLS if password else mech.NONE
        self._conn = DlmsConnection(client_system_title=None, authentication_method=mechanism,
                                    password=password or None)
        self._reader = WrapperReader()
        self._expect: str | None = None

    @property
    def busy(self) -> bool:
        return self._expect is not None

    def aarq(self) -> bytes:
        return self._send(self._conn.get_aarq(), "aare")

    def action(self, method: int) -> bytes:
        method_ref = cosem.CosemMethod(_DC, DISCONNECTOR, method)
        req = xdlms.ActionRequestNormal(cosem_method=method_ref, data=_INTEGER_0)
        return self._send(req, "action")

    def read(self) -> bytes:
        return self._send(xdlms.GetRequestWithList(cosem_attributes_with_selection=_READBACK), "read")

    def rlrq(self) -> bytes:
        return self._send(self._conn.get_rlrq(), "rlre")

    def _send(self, apdu: Any, expect: str) -> bytes:
        if self._expect is not None:
            raise RuntimeError(f"a {self._expect} is still awaited on wPort {self.server_wport}")
        # What `DlmsConnection.send(apdu)` does for an unciphered association (no keys are ever given
        # here), minus its two log lines: 21.3.2 formats the APDU's repr into an f-string for each even
        # when the level drops them (measured: ~38 µs of the ~142 µs an operation spent in dlms-cosem).
        self._conn.state.process_event(apdu)  # dlms-cosem's state machine still checks the order
        data: bytes = apdu.to_bytes()
        if len(data) > self._conn.max_pdu_size:  # as send() checks it, against the AARE's max PDU size
            raise LocalDlmsProtocolError(f"{len(data)}-byte APDU, the meter takes {self._conn.max_pdu_size}")
        self._expect = expect
        return wrap(self.client_wport, self.server_wport, data)

    def on_bytes(self, data: bytes) -> list[DlmsReply]:
        """The replies completed by these bytes (a wrapper error is a ProtocolFault)."""
        out: list[DlmsReply] = []
        self._reader.feed(data)
        while True:
            try:
                got = self._reader.next_apdu()
            except ValueError as e:
                out.append(ProtocolFault(str(e)))
                return out
            if got is None:
                return out
            out.append(self._reply(got[2]))

    def _reply(self, apdu_bytes: bytes) -> DlmsReply:
        expect, self._expect = self._expect, None
        if expect is None:
            return ProtocolFault("an answer nobody asked for")
        try:
            self._conn.receive_data(apdu_bytes)
            apdu = self._conn.next_event()
        except Exception as e:  # bytes from outside: any failure to parse them is the peer's fault
            self._conn.clear_buffer()
            if expect == "rlre":
                return Released()  # e.g. Gurux 1.0.203's RLRE length byte is wrong; we hang up anyway
            return ProtocolFault(f"{expect}: {type(e).__name__}: {e}"[:200])
        return _classify(expect, apdu)


def _classify(expect: str, apdu: Any) -> DlmsReply:
    if isinstance(apdu, xdlms.ExceptionResponse):
        return ActionDone(2) if expect != "aare" else Refused(True, f"exception {apdu.service_error!r}")
    if expect == "aare":
        if not isinstance(apdu, acse.ApplicationAssociationResponse):
            return ProtocolFault(f"expected an AARE, got {type(apdu).__name__}")
        if apdu.result is enumerations.AssociationResult.ACCEPTED:
            return Associated()
        transient = apdu.result is enumerations.AssociationResult.REJECTED_TRANSIENT
        return Refused(transient, f"{apdu.result.name}/{apdu.result_source_diagnostics!r}"[:200])
    if expect == "rlre":
        return Released()
    if expect == "action":
        if isinstance(apdu, xdlms.ActionResponseNormalWithError):
            return ActionDone(int(apdu.error))
        if isinstance(apdu, xdlms.ActionResponseNormal | xdlms.ActionResponseNormalWithData):
            return ActionDone(int(apdu.status))
        return ProtocolFault(f"expected an ACTION response, got {type(apdu).__name__}")
    if isinstance(apdu, xdlms.GetResponseWithList):
        return _readback(list(apdu.response_data))
    if isinstance(apdu, xdlms.GetResponseNormalWithError):
        return ActionDone(int(apdu.error))
    return ProtocolFault(f"expected a GET response, got {type(apdu).__name__}")


def _readback(items: list[Any]) -> DlmsReply:
    if len(items) != 3:
        return ProtocolFault(f"GET with list answered {len(items)} items, not 3")
    for item in items:
        if isinstance(item, enumerations.DataAccessResult):
            return ActionDone(int(item))
    out, cs, mode = items
    if not (isinstance(out, dlms_data.BooleanData) and isinstance(cs, dlms_data.EnumData)
            and isinstance(mode, dlms_data.EnumData)):
        return ProtocolFault("class 70 attributes 2-4 are not boolean, enum, enum")
    if cs.value not in (0, 1, 2) or not 0 <= mode.value <= 6:
        return ProtocolFault(f"control_state {cs.value} / control_mode {mode.value} out of range")
    return ReadDone(bool(out.value), int(cs.value), int(mode.value))
