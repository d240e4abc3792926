"""Messages describe themselves: the fields, types, units, defaults, allowed values and an example of
every message an engineer can inject, read from the codec's registry (`protocols.codec.spec_for`) and
the dataclasses themselves; no hand-kept list of messages or fields.

    schema = message_schema("RegisterMeter", head_ends=["hes-sim"])   # what --help prints
    built = build("RegisterMeter", {"account": "N0000000001", ...}, head_ends=["hes-sim"], now=now)
    built.message, built.defaults_used                                  # checked by the codec

`build` parses what a person typed by the rules of `jodo.values` (money integer paise; booleans
true/false/yes/no/1/0; dates ISO or unix seconds; date-times unix seconds or ISO, IST without an
offset), fills the defaults (the message's own, and the input defaults below), and then builds the
message through `protocols.codec.from_fields`, so it is checked exactly as the wire is. A problem is a
`FieldError`: the field, what is wrong, and a value that would be accepted.

Input defaults, beyond the message's own (each says where it comes from; shown by ``--help`` and
echoed in the answer as "defaults used")::

    RegisterMeter.head_end       the head-end, when exactly one is configured          (config)
    RegisterMeter.relay_capable  true: the rollout's smart meters have a relay          (policy)
    RegisterMeter.control_mode   2: DLMS mode that reconnects remotely without a button (policy)
    PaymentReceived.paid_at, .received_at   now                                         (clock)
    PaymentReceived.gateway "operator", .channel "counter"                              (inject)

The ``policy`` defaults are jodo's registration policy, kept here: domain/policy_defaults.toml has no
registration section (see `INPUT_DEFAULTS`).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import shlex
import time
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.commands import MeterCommand
from jodo.values import IST, BadValue, parse_bool, parse_date, parse_datetime, parse_int, parse_paise
from protocols import codec
from protocols.errors import CodecError
from protocols.payments import MAX_PAYMENT_PAISE, PaymentReceived

__all__ = [
    "INJECTABLE",
    "INPUT_DEFAULTS",
    "VALUE_RULES",
    "Built",
    "FieldError",
    "FieldKind",
    "FieldSchema",
    "InputDefault",
    "MessageSchema",
    "build",
    "injectable_schemas",
    "message_schema",
]

#: What ``POST /v1/admin/inject`` delivers: a payment to the desk, a meter command to its shard.
INJECTABLE: tuple[type[Any], ...] = (PaymentReceived, *typing.get_args(MeterCommand))

#: The value rules, as `jodo inject message TYPE --help` and ``GET /v1/admin/messages`` state them.
VALUE_RULES: dict[str, str] = {
    "money": "integer paise: 150000 is Rs 1,500.00; 1500.00 is refused, never rounded",
    "boolean": "true/false, yes/no, 1/0",
    "date": "ISO 2026-12-21, or unix seconds",
    "date-time": "unix seconds, or ISO 8601 2026-12-07T10:30 (no offset means IST; a bare date is midnight)",
    "enum": "one of the allowed values (for numbered ones, the number or the name)",
    "null": "an optional field takes null (or leave it out for its default)",
}


class FieldKind(StrEnum):
    """How a field's value is written."""

    STRING = "string"
    INTEGER = "integer"
    MONEY = "money"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "date-time"
    ENUM = "enum"
    LIST = "list"  # JSON array
    RECORD = "record"  # JSON, the codec's [tag, version, [values]]
    BYTES = "bytes"


@dataclass(frozen=True, slots=True)
class InputDefault:
    """A default for a field a person may leave out. ``value`` None with ``source`` clock: now."""

    value: Any
    source: str  # "policy", "config", "clock", "inject"
    why: str


_NOW = object()  # placeholder value of a clock default

#: Defaults beyond the messages' own. ``head_end`` is filled when exactly one head-end is configured.
INPUT_DEFAULTS: dict[tuple[str, str], InputDefault] = {
    ("RegisterMeter", "relay_capable"): InputDefault(
        True, "policy", "the rollout's smart meters (IS 16444 whole-current) have a load switch"),
    ("RegisterMeter", "control_mode"): InputDefault(
        2, "policy", "DLMS class 70 mode 2 reconnects remotely without a button press (research §1.1), "
                     "as the built-in simulator's meters do"),
    ("PaymentReceived", "paid_at"): InputDefault(_NOW, "clock", "now"),
    ("PaymentReceived", "received_at"): InputDefault(_NOW, "clock", "now"),
    ("PaymentReceived", "gateway"): InputDefault("operator", "inject", "an operator's injected payment"),
    ("PaymentReceived", "channel"): InputDefault("counter", "inject", "an operator's injected payment"),
}
_HEAD_END_FIELDS = frozenset({("RegisterMeter", "head_end"), ("UpdateMeter", "head_end")})

# What a field name alone says about it; a field's own source comment, when it has one, comes first.
_NOTES: dict[str, str] = {
    "account": "the consumer account (IVRS number): the meter's id",
    "serial": "the meter's serial, as its head-end knows it",
    "head_end": "the head-end system that switches this meter",
    "install_year": "year the meter was installed (the rollout policy picks automatic cohorts by it)",
    "relay_capable": "the meter has a load switch (relay) the head-end can operate",
    "control_mode": "DLMS class 70 attribute 4: 2 and 4 reconnect remotely, 1/3/5/6 need a button press,"
                    " 0 no remote switching",
    "protected": "never disconnected automatically (life support, hospitals)",
    "relay": "the relay's state now",
    "opening_dues_paise": "arrears carried over from billing (negative: a credit)",
    "bill_id": "the bill's id, unique",
    "amount_paise": "the amount",
    "due_date": "the due date printed on the bill (paying during that day is on time)",
    "issued_at": "when the bill was issued",
    "payment_id": "the payment's id, unique (duplicates are credited once)",
    "paid_at": "when the consumer paid",
    "received_at": "when jodo received it",
    "cashless": "paid online (earns the cashless rebate)",
    "engineer_id": "who acts (audited)",
    "reason": "why (audited)",
    "action": "what to do",
    "command_id": "the relay command this result is for",
    "status": "how the command ended",
    "output_state": "DLMS attribute 2: true = supply on",
    "control_state": "DLMS attribute 3 as read back",
    "retryable": "the head-end says trying again may work",
}
_EXAMPLES: dict[str, str] = {
    "account": "N0000000001", "serial": "MPW00000001", "install_year": "2022", "bill_id": "B-2026-12-0001",
    "payment_id": "pay-0001", "command_id": "N0000000001:c1", "engineer_id": "E042",
    "reason": "life support", "channel": "upi", "gateway": "operator", "request_id": "req-0001",
    "error_code": "timeout", "event_id": "evt-0001", "amount_paise": "150000",
    "opening_dues_paise": "150000", "control_mode": "2", "control_state": "1",
}
# Ranges the records' constructors check, stated before sending (the constructor stays the judge).
_RANGES: dict[str, tuple[int | None, int | None]] = {
    "control_mode": (0, 6),
    "install_year": (1990, None),
}
_ALLOWED: dict[tuple[str, str], tuple[str, ...]] = {
    ("RegisterMeter", "relay"): ("connected", "disconnected", "awaiting_button"),
}
_MONEY_RANGES: dict[tuple[str, str], tuple[int | None, int | None]] = {
    ("PaymentReceived", "amount_paise"): (1, MAX_PAYMENT_PAISE),
    ("ClearPayment", "amount_paise"): (1, MAX_PAYMENT_PAISE),
    ("PostBill", "amount_paise"): (0, MAX_PAYMENT_PAISE),
}
_ROUTES = {"PaymentReceived": "the payment desk (the ledger, then the meter)"}
_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+?)\s*$")


class FieldError(ValueError):
    """One field's problem: ``field`` (None: the message as a whole), what is wrong, an accepted value."""

    def __init__(self, message_type: str, field: str | None, problem: str, example: str = "") -> None:
        self.message_type = message_type
        self.field = field
        self.problem = problem
        self.example = example
        where = f"{message_type}.{field}" if field else message_type
        hint = f" (accepted, e.g. {field}={example})" if field and example else ""
        super().__init__(f"{where}: {problem}{hint}")


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """One field as a person writes it."""

    name: str
    kind: FieldKind
    python_type: str
    required: bool  # no default of any kind: it must be given
    nullable: bool
    has_default: bool
    default: Any  # JSON-able; "now" for a clock default
    default_source: str  # "" (none), "message", "policy", "config", "clock", "inject"
    default_why: str
    unit: str
    allowed: tuple[str, ...]
    lo: int | None
    hi: int | None
    description: str
    example: str

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "kind": str(self.kind), "type": self.python_type,
                               "required": self.required, "nullable": self.nullable}
        if self.has_default:
            doc["default"] = self.default
            doc["default_source"] = self.default_source
            if self.default_why:
                doc["default_why"] = self.default_why
        for key in ("unit", "description", "example"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        if self.allowed:
            doc["allowed"] = list(self.allowed)
        if self.lo is not None or self.hi is not None:
            doc["range"] = [self.lo, self.hi]
        return doc


@dataclass(frozen=True, slots=True)
class MessageSchema:
    """One message type: what it does, where it goes, its fields and an example command line."""

    type: str
    summary: str
    routed_to: str
    version: int
    fields: tuple[FieldSchema, ...]
    example: str

    def field(self, name: str) -> FieldSchema | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "summary": self.summary, "routed_to": self.routed_to,
                "version": self.version, "fields": [f.to_json() for f in self.fields],
                "example": self.example}


@dataclass(frozen=True, slots=True)
class Built:
    """A message built from typed-in fields, and the defaults that filled what was left out."""

    message: Any
    #: (field, JSON-able value, source) of the input defaults used (policy, config, clock, inject); a
    #: message's own defaults are what leaving a field out means, and are not listed
    defaults_used: tuple[tuple[str, Any, str], ...]

    def defaults_json(self) -> list[dict[str, Any]]:
        return [{"field": f, "value": v, "source": s} for f, v, s in self.defaults_used]


# ---------------------------------------------------------------- describing


def _injectable(tag: str) -> type[Any]:
    by_name = {cls.__name__: cls for cls in INJECTABLE}
    cls = by_name.get(tag)
    if cls is not None:
        return cls
    names = ", ".join(by_name)
    try:
        codec.spec_for(tag)
    except CodecError:
        raise FieldError(tag[:64], None, f"unknown message type; injectable: {names}") from None
    raise FieldError(tag, None, f"is not injectable (jodo sends it itself); injectable: {names}")


def injectable_schemas(*, head_ends: Sequence[str] = (), now: float | None = None) -> list[MessageSchema]:
    """Every injectable message's schema, in `INJECTABLE` order."""
    return [message_schema(cls.__name__, head_ends=head_ends, now=now) for cls in INJECTABLE]


def message_schema(tag: str, *, head_ends: Sequence[str] = (), now: float | None = None) -> MessageSchema:
    """The schema of an injectable message (`FieldError` for another name). ``head_ends``: the configured
    ones (a single one becomes the ``head_end`` default); ``now`` dates the examples."""
    cls = _injectable(tag)
    spec = codec.spec_for(cls)
    hints = typing.get_type_hints(cls)
    comments = _source_comments(cls)
    today = datetime.fromtimestamp(time.time() if now is None else now, IST)
    fields = []
    for index, f in enumerate(f for f in dataclasses.fields(cls) if f.init):
        fields.append(_field_schema(spec.tag, f, hints[f.name], index >= spec.required, comments,
                                    list(head_ends), today))
    required = [f for f in fields if f.required]
    words = [f"{f.name}={shlex.quote(f.example)}" for f in required]
    example = " ".join(["jodo inject message", spec.tag, *words])
    summary = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].replace("``", "").split())
    return MessageSchema(type=spec.tag, summary=summary, routed_to=_ROUTES.get(spec.tag, "the meter's shard"),
                         version=spec.version, fields=tuple(fields), example=example)


def _source_comments(cls: type[Any]) -> dict[str, str]:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return {m.group(1): m.group(2) for line in source.splitlines() if (m := _COMMENT.match(line))}


def _field_schema(
    tag: str, f: dataclasses.Field[Any], hint: Any, has_message_default: bool, comments: Mapping[str, str],
    head_ends: list[str], today: datetime,
) -> FieldSchema:
    inner, nullable = _unwrap_optional(hint)
    kind, unit, allowed = _kind_of(f.name, inner)
    allowed = _ALLOWED.get((tag, f.name), allowed)
    lo, hi = _RANGES.get(f.name, (None, None))
    if kind is FieldKind.MONEY:
        lo, hi = _MONEY_RANGES.get((tag, f.name), (None, MAX_PAYMENT_PAISE))
    if f.name == "install_year":
        hi = today.year + 1
    if f.name == "head_end" and head_ends:
        allowed = tuple(head_ends)
    default, source, why = None, "", ""
    if has_message_default:
        factory: Any = f.default_factory
        raw = f.default if f.default is not dataclasses.MISSING else factory()
        default, source = _jsonable(raw), "message"
    extra = INPUT_DEFAULTS.get((tag, f.name))
    if extra is not None:
        default = "now" if extra.value is _NOW else extra.value
        source, why = extra.source, extra.why
    elif (tag, f.name) in _HEAD_END_FIELDS and len(head_ends) == 1 and not has_message_default:
        default, source, why = head_ends[0], "config", "the only head-end configured"
    comment = comments.get(f.name, "")
    note = _NOTES.get(f.name, "")
    description = note or comment
    return FieldSchema(
        name=f.name, kind=kind, python_type=_type_text(hint), required=not source, nullable=nullable,
        has_default=bool(source), default=default, default_source=source, default_why=why, unit=unit,
        allowed=allowed, lo=lo, hi=hi, description=description,
        example=_example(f.name, kind, allowed, head_ends, today),
    )


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        if len(members) == 1:
            return members[0], nullable
        return hint, nullable
    return hint, False


def _kind_of(name: str, hint: Any) -> tuple[FieldKind, str, tuple[str, ...]]:
    if hint is bool:
        return FieldKind.BOOLEAN, "", ("true", "false")
    if hint is int:
        if name.endswith("_paise"):
            return FieldKind.MONEY, "paise", ()
        if name.endswith("_at"):
            return FieldKind.DATETIME, "unix seconds", ()
        if name.endswith(("_s", "_seconds")):
            return FieldKind.INTEGER, "seconds", ()
        return FieldKind.INTEGER, "", ()
    if hint is str:
        if name.endswith("_date"):
            return FieldKind.DATE, "ISO date", ()
        return FieldKind.STRING, "", ()
    if hint is bytes:
        return FieldKind.BYTES, "", ()
    if isinstance(hint, type) and issubclass(hint, enum.IntEnum):
        return FieldKind.ENUM, "", tuple(f"{m.value}={m.name.lower()}" for m in hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return FieldKind.ENUM, "", tuple(str(m.value) for m in hint)
    if typing.get_origin(hint) is typing.Literal:
        return FieldKind.ENUM, "", tuple(str(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return FieldKind.LIST, "JSON array", ()
    return FieldKind.RECORD, "JSON", ()


def _type_text(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("domain.enums.", "")


def _example(name: str, kind: FieldKind, allowed: tuple[str, ...], head_ends: list[str],
             today: datetime) -> str:
    if name == "head_end":
        return head_ends[0] if head_ends else "hes-sim"
    if name in _EXAMPLES:
        return _EXAMPLES[name]
    if kind is FieldKind.ENUM and allowed:
        return allowed[0].split("=")[0]
    if kind is FieldKind.BOOLEAN:
        return "true"
    if kind is FieldKind.MONEY:
        return "150000"
    if kind is FieldKind.DATE:
        return (today + timedelta(days=14)).date().isoformat()
    if kind is FieldKind.DATETIME:
        return today.strftime("%Y-%m-%dT%H:%M")
    if kind is FieldKind.INTEGER:
        return "1"
    if kind is FieldKind.LIST:
        return "[]"
    return name.replace("_", "-")


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- building


def build(
    tag: str, fields: Mapping[str, Any], *, head_ends: Collection[str] = (), now: float | None = None
) -> Built:
    """The message ``tag`` from typed-in ``fields`` (strings as typed, or JSON values), defaults filled;
    `FieldError` naming the first field that is wrong, with an accepted example."""
    if not isinstance(fields, Mapping):
        raise FieldError(tag[:64], None, 'fields must be an object {"field": value, ...}')
    now_s = int(time.time() if now is None else now)
    schema = message_schema(tag, head_ends=sorted(head_ends) if head_ends else (), now=now_s)
    unknown = [name for name in fields if schema.field(name) is None]
    if unknown:
        names = ", ".join(f.name for f in schema.fields)
        raise FieldError(schema.type, str(unknown[0])[:64],
                         f"is not a field of {schema.type}; its fields: {names}")
    values: dict[str, Any] = {}
    used: list[tuple[str, Any, str]] = []
    for f in schema.fields:
        if f.name in fields:
            values[f.name] = _parse(schema.type, f, fields[f.name], head_ends)
        elif f.default_source and f.default_source != "message":
            value = now_s if f.default == "now" else f.default
            values[f.name] = value
            used.append((f.name, value, f.default_source))
        elif not f.default_source:  # a message default is what leaving the field out means
            raise FieldError(schema.type, f.name, "is required", f.example)
    try:
        message: Any = codec.from_fields(schema.type, values)
    except CodecError as exc:
        raise _codec_problem(schema, str(exc)) from None
    return Built(message=message, defaults_used=tuple(used))


def _parse(tag: str, f: FieldSchema, value: Any, head_ends: Collection[str]) -> Any:
    try:
        if value is None or (f.nullable and isinstance(value, str) and value.strip().lower() in ("null", "")):
            if not f.nullable:
                raise BadValue("may not be null")
            return None
        parsed = _PARSERS[f.kind](f, value)
    except BadValue as exc:
        raise FieldError(tag, f.name, str(exc), f.example) from None
    if f.name == "head_end" and head_ends and parsed not in head_ends:
        configured = ", ".join(sorted(head_ends))
        raise FieldError(tag, f.name, f"unknown head-end {parsed!r} (configured: {configured})", f.example)
    return parsed


def _string(f: FieldSchema, value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(f"expected text, got {type(value).__name__} {value!r}")
    if not value:
        raise BadValue("is empty")
    return value


def _enum(f: FieldSchema, value: Any) -> Any:
    text = str(value).strip().lower() if not isinstance(value, bool) else None
    for option in f.allowed:
        number, _, name = option.partition("=")
        if text in (number.lower(), name):
            return int(number) if name else number
    raise BadValue(f"{str(value)[:40]!r} is not one of {', '.join(f.allowed)}")


def _json(f: FieldSchema, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise BadValue(f"{value[:40]!r} is not JSON") from None
    return value


def _bytes(f: FieldSchema, value: Any) -> bytes:
    raise BadValue("bytes cannot be typed in; send the message msgpack-encoded")


_PARSERS: dict[FieldKind, Callable[[FieldSchema, Any], Any]] = {
    FieldKind.STRING: _string,
    FieldKind.INTEGER: lambda f, v: parse_int(v, f.lo, f.hi, f.unit),
    FieldKind.MONEY: lambda f, v: parse_paise(v, f.lo, f.hi),
    FieldKind.BOOLEAN: lambda f, v: parse_bool(v),
    FieldKind.DATE: lambda f, v: parse_date(v).isoformat(),
    FieldKind.DATETIME: lambda f, v: parse_datetime(v),
    FieldKind.ENUM: _enum,
    FieldKind.LIST: _json,
    FieldKind.RECORD: _json,
    FieldKind.BYTES: _bytes,
}


def _codec_problem(schema: MessageSchema, text: str) -> FieldError:
    """A codec/constructor refusal, pinned to the field it names when it names one."""
    detail = text.split(": ", 1)[1] if text.startswith(schema.type) and ": " in text else text
    path = re.match(rf"{schema.type}\.(\w+): (.*)", text)
    if path:
        f = schema.field(path.group(1))
        return FieldError(schema.type, path.group(1), path.group(2), f.example if f else "")
    for f in schema.fields:
        if re.search(rf"\b{f.name}\b", detail):
            return FieldError(schema.type, f.name, detail, f.example)
    return FieldError(schema.type, None, detail)
