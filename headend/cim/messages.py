"""IEC 61968-9 messages in the 61968-100 envelope, built and parsed with lxml, checked against jodo's XSD.

What jodo sends: `create EndDeviceControls` (one EndDeviceControl per command; its mRID is the command
id, EndDeviceControlType 3.31.0.23 open/disconnect or 3.31.0.18 close/reconnect, as Connexo uses them:
/work/shared/research/domain.md §2; or 3.20.22.13, a prepaid meter's credit update, its balance in
EndDeviceControlAttribute "creditAmount" (rupees, two decimals, exact from paise) with "creditType"
"Import Credit", the attributes Connexo's HeadEndController reads for that code). What it accepts:
the synchronous `reply` (Result OK / PARTIAL / FAILED with Error/code, Error/ID = the control's mRID)
and the asynchronous `created EndDeviceEvents`, one event per control, ref = the code with its last
field replaced by the outcome (PROCESSED, ERROR, EXPIRED, CANCELLED), detail "Contactor status"
Opened / Closed (Connexo's handler, domain.md §2).

Every message in or out is validated against `schema/message.xsd` (a subset written for jodo, not the
IEC schema). Bad input raises `CimMessageError` naming what is wrong; nothing is half-parsed. The SOAP
1.1 envelope is a thin wrapper (`soap_wrap`, `soap_unwrap`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lxml import etree

from protocols.headend import HesAction, HesCommand, HesControlState

__all__ = [
    "CONTACTOR_OF",
    "CONTROL_CODES",
    "CREDIT_TYPE",
    "EVENT_PREFIX_OF",
    "TOKEN_HEADER",
    "CimEvent",
    "CimEvents",
    "CimMessageError",
    "CimReply",
    "EventResult",
    "build_events",
    "build_reply",
    "build_request",
    "paise_of_rupees",
    "parse_events",
    "parse_reply",
    "parse_request",
    "rupees",
    "soap_unwrap",
    "soap_wrap",
]

MSG = "http://iec.ch/TC57/2011/schema/message"
EDC = "http://iec.ch/TC57/2011/EndDeviceControls#"
EDE = "http://iec.ch/TC57/2011/EndDeviceEvents#"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"

# EndDeviceControlType: <EndDeviceType 3 = electricity meter>.<Domain>.<SubDomain>.<action>: domain 31 =
# RCD switch; 20.22.13 = prepayment, credit amount, update (Connexo's UPDATE_CREDIT_AMOUNT, domain.md §2)
CONTROL_CODES: dict[HesAction, str] = {HesAction.DISCONNECT: "3.31.0.23", HesAction.CONNECT: "3.31.0.18",
                                       HesAction.CREDIT: "3.20.22.13"}
_ACTION_OF = {code: action for action, code in CONTROL_CODES.items()}
# an event's ref is its control's code with the last field replaced by the outcome (Connexo)
EVENT_PREFIX_OF: dict[HesAction, str] = {a: code.rsplit(".", 1)[0] for a, code in CONTROL_CODES.items()}
CREDIT_TYPE = "Import Credit"  # Connexo's creditType for the balance a meter draws on (HeadEndControllerTest)
_CREDIT_AMOUNT = "creditAmount"
_CREDIT_TYPE = "creditType"
_RUPEES = re.compile(r"^(-?)(\d{1,13})\.(\d{2})$")
CONTACTOR = "Contactor status"
# the detail's values: Connexo reads Opened / Closed from the breaker status; Armed is jodo's name for
# class 70's ready_for_reconnection (armed for closure: the consumer's button closes it)
CONTACTOR_OF: dict[HesControlState, str] = {HesControlState.DISCONNECTED: "Opened",
                                            HesControlState.CONNECTED: "Closed",
                                            HesControlState.READY_FOR_RECONNECTION: "Armed"}
TOKEN_HEADER = "X-Jodo-Token"  # the callback's shared token

_SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("schema") / "message.xsd")))
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=True)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class CimMessageError(ValueError):
    """A message that is not well-formed, not valid against jodo's subset XSD, or not the one expected."""


class EventResult(StrEnum):
    PROCESSED = "PROCESSED"
    ERROR = "ERROR"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class CimReply:
    correlation_id: str
    result: str  # OK | PARTIAL | FAILED
    errors: tuple[tuple[str, str | None], ...]  # (code, control mRID or None = the whole request)


@dataclass(frozen=True, slots=True)
class CimEvent:
    control_mrid: str  # = jodo's command id
    meter: str
    result: EventResult
    contactor: str | None  # "Opened" | "Closed" | None
    reason: str | None  # an error code with ERROR
    prefix: str = "3.31.0"  # the ref's first three fields: its control's (3.20.22 for a credit update)


@dataclass(frozen=True, slots=True)
class CimEvents:
    correlation_id: str
    message_id: str
    events: tuple[CimEvent, ...]


def _stamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds")


def _sub(parent: etree._Element, ns: str, tag: str, text: str | None = None) -> etree._Element:
    e = etree.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        e.text = text
    return e


def _header(root: etree._Element, verb: str, noun: str, *, now: float, source: str, message_id: str,
            correlation_id: str, reply_address: str | None = None) -> None:
    h = _sub(root, MSG, "Header")
    _sub(h, MSG, "Verb", verb)
    _sub(h, MSG, "Noun", noun)
    _sub(h, MSG, "Timestamp", _stamp(now))
    _sub(h, MSG, "Source", source)
    if reply_address is not None:
        _sub(h, MSG, "AsyncReplyFlag", "true")
        _sub(h, MSG, "ReplyAddress", reply_address)
    _sub(h, MSG, "MessageID", message_id)
    _sub(h, MSG, "CorrelationID", correlation_id)


def _finish(root: etree._Element) -> bytes:
    _validate(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _validate(root: etree._Element) -> None:
    try:
        _SCHEMA.assertValid(root)
    except etree.DocumentInvalid as e:
        raise CimMessageError(f"not valid against jodo's CIM subset XSD: {e}") from None


def _load(data: bytes, expect: str, verb: str, noun: str) -> etree._Element:
    if len(data) > MAX_MESSAGE_BYTES:
        raise CimMessageError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as e:
        raise CimMessageError(f"not well-formed XML: {e}") from None
    if root.tag == f"{{{SOAP}}}Envelope":
        root = soap_unwrap(root)
    if root.tag != f"{{{MSG}}}{expect}":
        raise CimMessageError(f"expected a {expect}, got <{etree.QName(root).localname}>")
    _validate(root)
    got = (_text(root, "Header/m:Verb"), _text(root, "Header/m:Noun"))
    if got != (verb, noun):
        raise CimMessageError(f"expected {verb} {noun}, got {got[0]} {got[1]}")
    return root


_NS = {"m": MSG, "c": EDC, "e": EDE}


def _text(root: etree._Element, path: str) -> str:
    found = root.find("m:" + path if not path.startswith(("m:", "c:", "e:")) else path, _NS)
    return (found.text or "") if found is not None else ""


def soap_wrap(message: bytes) -> bytes:
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soapenv": SOAP})
    body = _sub(env, SOAP, "Body")
    body.append(etree.fromstring(message, _PARSER))
    return bytes(etree.tostring(env, xml_declaration=True, encoding="UTF-8"))


def soap_unwrap(env: etree._Element) -> etree._Element:
    body = env.find(f"{{{SOAP}}}Body")
    if body is None or len(body) != 1:
        raise CimMessageError("a SOAP envelope must hold exactly one message in its Body")
    fault = body[0]
    if fault.tag == f"{{{SOAP}}}Fault":
        raise CimMessageError(f"SOAP fault: {fault.findtext('faultstring') or 'no faultstring'}")
    return fault


# --- create EndDeviceControls ----------------------------------------------------------------------


def build_request(commands: list[HesCommand], *, now: float, source: str, message_id: str,
                  correlation_id: str, reply_address: str) -> bytes:
    """`create EndDeviceControls`, one control per command; READ commands are not CIM controls here."""
    if not commands:
        raise ValueError("a request needs at least one command")
    root = etree.Element(f"{{{MSG}}}RequestMessage", nsmap={"msg": MSG})
    _header(root, "create", "EndDeviceControls", now=now, source=source, message_id=message_id,
            correlation_id=correlation_id, reply_address=reply_address)
    payload = _sub(root, MSG, "Payload")
    controls = etree.SubElement(payload, f"{{{EDC}}}EndDeviceControls", nsmap={"edc": EDC})
    for c in commands:
        code = CONTROL_CODES.get(c.action)
        if code is None:
            raise ValueError(f"command {c.command_id}: {c.action.name} is not a CIM EndDeviceControl")
        ctl = _sub(controls, EDC, "EndDeviceControl")
        _sub(ctl, EDC, "mRID", c.command_id)
        _sub(ctl, EDC, "EndDeviceControlType").set("ref", code)
        if c.action is HesAction.CREDIT:
            if c.credit_paise is None:
                raise ValueError(f"command {c.command_id}: a credit update without a balance")
            for name, value in ((_CREDIT_TYPE, CREDIT_TYPE), (_CREDIT_AMOUNT, rupees(c.credit_paise))):
                attr = _sub(ctl, EDC, "EndDeviceControlAttribute")
                _sub(attr, EDC, "name", name)
                _sub(attr, EDC, "value", value)
        _sub(_sub(ctl, EDC, "scheduledInterval"), EDC, "end", _stamp(c.expires_at))
        _sub(_sub(ctl, EDC, "EndDevices"), EDC, "mRID", c.meter)
    return _finish(root)


def rupees(paise: int) -> str:
    """Integer paise as rupees with two decimals, exactly: 123456 → "1234.56", -5 → "-0.05"."""
    sign = "-" if paise < 0 else ""
    whole, frac = divmod(abs(paise), 100)
    return f"{sign}{whole}.{frac:02d}"


def paise_of_rupees(text: str) -> int:
    """The inverse of `rupees`; anything else (more decimals, an exponent, spaces) raises CimMessageError."""
    m = _RUPEES.match(text)
    if m is None:
        raise CimMessageError(f"creditAmount {text!r} is not rupees with two decimals")
    paise = int(m.group(2)) * 100 + int(m.group(3))
    return -paise if m.group(1) else paise


def parse_request(data: bytes) -> tuple[str, str, str, list[HesCommand]]:
    """(message_id, correlation_id, reply_address, commands) of a `create EndDeviceControls` (simulator).
    A credit update must carry exactly creditType and creditAmount; no other control carries any."""
    root = _load(data, "RequestMessage", "create", "EndDeviceControls")
    commands = []
    for ctl in root.iterfind("m:Payload/c:EndDeviceControls/c:EndDeviceControl", _NS):
        ref = ctl.find("c:EndDeviceControlType", _NS)
        end = ctl.findtext("c:scheduledInterval/c:end", namespaces=_NS)
        expires = dt.datetime.fromisoformat(end).timestamp() if end else float("inf")
        mrid = ctl.findtext("c:mRID", namespaces=_NS) or ""
        action = _ACTION_OF[ref.get("ref", "") if ref is not None else ""]
        attrs: dict[str, str] = {}
        for a in ctl.iterfind("c:EndDeviceControlAttribute", _NS):
            name = a.findtext("c:name", namespaces=_NS) or ""
            if name in attrs:
                raise CimMessageError(f"control {mrid}: attribute {name} given twice")
            attrs[name] = a.findtext("c:value", namespaces=_NS) or ""
        credit = None
        if action is HesAction.CREDIT:
            if set(attrs) != {_CREDIT_TYPE, _CREDIT_AMOUNT} or attrs[_CREDIT_TYPE] != CREDIT_TYPE:
                raise CimMessageError(f"control {mrid}: a 3.20.22.13 credit update needs creditType "
                                      f"{CREDIT_TYPE!r} and creditAmount, got {sorted(attrs)}")
            credit = paise_of_rupees(attrs[_CREDIT_AMOUNT])
        elif attrs:
            raise CimMessageError(f"control {mrid}: {CONTROL_CODES[action]} takes no attributes")
        commands.append(HesCommand(mrid, ctl.findtext("c:EndDevices/c:mRID", namespaces=_NS) or "",
                                   action, expires, credit))
    return (_text(root, "Header/m:MessageID"), _text(root, "Header/m:CorrelationID"),
            _text(root, "Header/m:ReplyAddress"), commands)


# --- the synchronous reply -------------------------------------------------------------------------


def build_reply(correlation_id: str, result: str, errors: list[tuple[str, str | None]], *, now: float,
                source: str, message_id: str) -> bytes:
    root = etree.Element(f"{{{MSG}}}ResponseMessage", nsmap={"msg": MSG})
    _header(root, "reply", "EndDeviceControls", now=now, source=source, message_id=message_id,
            correlation_id=correlation_id)
    reply = _sub(root, MSG, "Reply")
    _sub(reply, MSG, "Result", result)
    for code, mrid in errors:
        err = _sub(reply, MSG, "Error")
        _sub(err, MSG, "code", code)
        if mrid is not None:
            _sub(err, MSG, "ID", mrid)
    return _finish(root)


def parse_reply(data: bytes) -> CimReply:
    root = _load(data, "ResponseMessage", "reply", "EndDeviceControls")
    errors = tuple((e.findtext("m:code", namespaces=_NS) or "", e.findtext("m:ID", namespaces=_NS))
                   for e in root.iterfind("m:Reply/m:Error", _NS))
    return CimReply(_text(root, "Header/m:CorrelationID"), _text(root, "Reply/m:Result"), errors)


# --- the asynchronous created EndDeviceEvents --------------------------------------------------------


def build_events(correlation_id: str, events: list[CimEvent], *, now: float, source: str,
                 message_id: str) -> bytes:
    root = etree.Element(f"{{{MSG}}}EventMessage", nsmap={"msg": MSG})
    _header(root, "created", "EndDeviceEvents", now=now, source=source, message_id=message_id,
            correlation_id=correlation_id)
    payload = _sub(root, MSG, "Payload")
    evs = etree.SubElement(payload, f"{{{EDE}}}EndDeviceEvents", nsmap={"ede": EDE})
    for i, ev in enumerate(events):
        e = _sub(evs, EDE, "EndDeviceEvent")
        _sub(e, EDE, "mRID", f"{message_id}-{i}")
        _sub(e, EDE, "createdDateTime", _stamp(now))
        if ev.reason is not None:
            _sub(e, EDE, "reason", ev.reason)
        if ev.contactor is not None:
            d = _sub(e, EDE, "EndDeviceEventDetails")
            _sub(d, EDE, "name", CONTACTOR)
            _sub(d, EDE, "value", ev.contactor)
        _sub(e, EDE, "EndDeviceEventType").set("ref", f"{ev.prefix}.{ev.result.value}")
        _sub(_sub(e, EDE, "EndDeviceControl"), EDE, "mRID", ev.control_mrid)
        _sub(_sub(e, EDE, "Assets"), EDE, "mRID", ev.meter)
    return _finish(root)


def parse_events(data: bytes) -> CimEvents:
    root = _load(data, "EventMessage", "created", "EndDeviceEvents")
    events = []
    for e in root.iterfind("m:Payload/e:EndDeviceEvents/e:EndDeviceEvent", _NS):
        ref_el = e.find("e:EndDeviceEventType", _NS)
        ref = ref_el.get("ref", "") if ref_el is not None else ""
        contactor = None
        for d in e.iterfind("e:EndDeviceEventDetails", _NS):
            if d.findtext("e:name", namespaces=_NS) == CONTACTOR:
                contactor = d.findtext("e:value", namespaces=_NS)
        prefix, _, result = ref.rpartition(".")
        events.append(CimEvent(e.findtext("e:EndDeviceControl/e:mRID", namespaces=_NS) or "",
                               e.findtext("e:Assets/e:mRID", namespaces=_NS) or "",
                               EventResult(result), contactor,
                               e.findtext("e:reason", namespaces=_NS), prefix))
    return CimEvents(_text(root, "Header/m:CorrelationID"), _text(root, "Header/m:MessageID"), tuple(events))
