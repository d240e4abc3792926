"""One association's server end, on Gurux's own DLMS server stack (`gurux_dlms.GXDLMSServer`, GPLv2).

Test/simulator code only (the ``sim-dlms`` extra); nothing on the product's path imports it.

A `MeterServer` serves one TCP connection. The AARQ's destination wPort (Gurux calls it the server
address; `isTarget`) picks the meter, and the connection's `GXDLMSDisconnectControl` then shows that
meter: before every read its attributes 2-4 are loaded from the fleet, and Gurux encodes them; ACTION
methods 1/2 run the class-70 rules (`transitions`) on the fleet. Gurux's Python object has no
`invoke()` for class 70 (research/cluster-and-prepaid.md, "DLMS with Gurux"), so `onPreAction`
handles the methods.

Gurux 1.0.203's Python server is an incomplete port of the Java one; four gaps are filled here (each is
a crash or a malformed frame without it, found against dlms-cosem):
- `GXServerReply` has no setReply / getConnectionInfo / getCount / setCount → `_Reply`.
- the LN command handler calls `server.onPreAction(list(e))` on one `ValueEventArgs`, which is not
  iterable → `ValueEventArgs.__iter__` yields the event itself.
- a GET calls `server.notifyRead()` / `onPostRead()` / `get/setTransaction()` / `notifyConnected()`,
  which the base class does not define → defined here.
- `GXDLMSAssociationLogicalName.objectList.append(self.items)` in `initialize()` raises → the list is
  filled before; the RLRE it builds has wrong length bytes → `handleReleaseRequest` builds it.
"""

from __future__ import annotations

from typing import Any

from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.enums import Authentication, ErrorCode, InterfaceType, SourceDiagnostic
from gurux_dlms.enums.AccessMode import AccessMode
from gurux_dlms.enums.MethodAccessMode import MethodAccessMode
from gurux_dlms.GXDLMSServer import GXDLMSServer
from gurux_dlms.GXServerReply import GXServerReply
from gurux_dlms.objects import GXDLMSAssociationLogicalName, GXDLMSDisconnectControl
from gurux_dlms.ValueEventArgs import ValueEventArgs

__all__ = ["MeterHooks", "MeterServer", "handle"]

ValueEventArgs.__iter__ = lambda self: iter([self])  # see the module docstring


class _Reply(GXServerReply):  # type: ignore[misc]
    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def getCount(self) -> int:
        return int(self.count)

    def setCount(self, value: int) -> None:
        self.count = value


class MeterHooks:
    """What the fleet side answers (implemented by `headend.dlms_sim.server.DlmsFleetSim`)."""

    def meter_for(self, wport: int) -> int | None:  # a fleet index, or None (no such logical device)
        raise NotImplementedError

    def authenticate(self, index: int, level: int, password: bytes | None) -> bool:
        raise NotImplementedError

    def read(self, index: int) -> tuple[bool, int, int]:  # output_state, control_state, control_mode
        raise NotImplementedError

    def act(self, index: int, method: int) -> int:  # a DLMS Action-Result (0 success)
        raise NotImplementedError


class MeterServer(GXDLMSServer):  # type: ignore[misc]
    def __init__(self, hooks: MeterHooks) -> None:
        super().__init__(True, InterfaceType.WRAPPER)
        self.hooks = hooks
        self.index: int | None = None
        self.dc = GXDLMSDisconnectControl("0.0.96.3.10.255")
        ln = GXDLMSAssociationLogicalName()
        ln.authenticationMechanismName.mechanismId = Authentication.LOW
        ln.objectList.append(ln)
        ln.objectList.append(self.dc)
        self.items.append(ln)
        self.items.append(self.dc)
        self.initialize()

    # --- addressing and association -----------------------------------------------------------

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        self.index = self.hooks.meter_for(int(serverAddress))
        return self.index is not None

    def onValidateAuthentication(self, authentication: Any, password: Any) -> Any:
        if self.index is None:
            return SourceDiagnostic.NO_REASON_GIVEN
        pw = bytes(password) if password else None
        ok = self.hooks.authenticate(self.index, int(authentication), pw)
        return SourceDiagnostic.NONE if ok else SourceDiagnostic.AUTHENTICATION_FAILURE

    def handleReleaseRequest(self, data: Any) -> None:
        tmp = _GXAPDU.getUserInformation(self.settings, self.settings.cipher)
        self.replyData.set(bytes([0x63, len(tmp) + 7, 0x80, 0x01, 0x00, 0xBE, len(tmp) + 2, 0x04, len(tmp)]))
        self.replyData.set(tmp)

    # --- class 70 -------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.index is not None:
            self.dc.outputState, self.dc.controlState, self.dc.controlMode = self.hooks.read(self.index)

    def notifyRead(self, *args: Any) -> None:
        self._load()

    def onPreRead(self, args: Any) -> None:
        self._load()

    def onPreGet(self, args: Any) -> None:
        self._load()

    def onPreAction(self, args: Any) -> None:
        for e in args:
            if e.target is self.dc and self.index is not None:
                result = self.hooks.act(self.index, int(e.index))
                e.handled = True
                e.value = 0
                e.error = ErrorCode(result) if result else ErrorCode.OK

    def onGetAttributeAccess(self, arg: Any) -> Any:
        return AccessMode.READ

    def onGetMethodAccess(self, arg: Any) -> Any:
        return MethodAccessMode.ACCESS

    # --- the rest of the abstract surface: nothing to do --------------------------------------

    def getTransaction(self) -> Any:
        return self.transaction

    def setTransaction(self, value: Any) -> None:
        self.transaction = value

    def onPostRead(self, args: Any = None) -> None: ...
    def onPostGet(self, args: Any) -> None: ...
    def onPreWrite(self, args: Any) -> None: ...
    def onPostWrite(self, args: Any) -> None: ...
    def onPostAction(self, args: Any) -> None: ...
    def onFindObject(self, objectType: Any, sn: Any, ln: Any) -> None: ...
    def onConnected(self, connectionInfo: Any) -> None: ...
    def notifyConnected(self, connectionInfo: Any) -> None: ...
    def onInvalidConnection(self, connectionInfo: Any) -> None: ...
    def onDisconnected(self, connectionInfo: Any) -> None: ...


def handle(server: MeterServer, data: bytes) -> bytes:
    """Feed received bytes to Gurux; the reply bytes (empty while a frame is incomplete)."""
    sr = _Reply(data)
    server.handleRequest(sr)
    return bytes(sr.reply) if sr.reply else b""
