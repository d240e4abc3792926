"""The head-end reference protocol: length-prefixed msgpack frames over TCP.

Wire: every frame is a 4-byte big-endian unsigned body length, then a msgpack array body
``[tag, field, field, ...]``. Fields are positional; a newer peer may append fields (readers ignore
extra trailing fields) but never reorders or removes them. Limits: `DEFAULT_MAX_FRAME_BYTES` per body
(a peer may announce a smaller one in `HesWelcome`), `MAX_BATCH` records per batch frame.

Conversation (IEC 61968-9 style: answer now, results later)::

    client                                   head-end
    HesHello(versions)            ─────►
                                  ◄─────     HesWelcome(version, limits)
                                             | HesError(unsupported_version, fatal)
    HesSubmit(batch_id, commands) ─────►
                                  ◄─────     HesBatchAccepted(batch_id, rejected=per-command reasons)
                                             | HesBatchRejected(batch_id, reason)   (whole batch)
                                  ◄─────     HesResults(results)   later, any order, maybe duplicated
                                  ◄─────     HesReads(reads)       unsolicited: consumption reads (a day's)
    HesHeartbeat(seq)             ─────►
                                  ◄─────     HesHeartbeat(seq)     (echo)
    anything malformed            ─────►
                                  ◄─────     HesError(code, detail, batch_id, fatal)

A command's `command_id` is the correlation id of its result. A result is the head-end's word, not proof:
the adapter reads the relay back (action ``READ``) before it calls a command done.

`HesReads` (tag 9, appended in session 8) carries consumption reads, head-end → client, unasked: a
client that predates it answers ``HesError(code="unknown_frame")`` and goes on; nothing is answered to
a client that knows it (a read is idempotent by `read_id`, so a head-end may send it again).

Simulator-only frames (a real head-end answers ``HesError(code="unsupported")``): `HesInspect` and
`HesPressButton`, both answered by `HesInspection` with the meters' true relay states.

Frames are frozen, slotted, keyword-only dataclasses; the records inside batch frames (`HesCommand`,
`HesRejection`, `HesCommandResult`, `HesMeterState`, `HesRead`) are NamedTuples, because a 10 000-record frame
builds them ~4x faster than frozen dataclasses and msgpack packs them as arrays as they are.
Decoding anything malformed raises `protocols.errors.FrameError` and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

import msgpack

from protocols.errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_BATCH",
    "MAX_ID_CHARS",
    "MAX_READ_WH",
    "PROTOCOL_VERSION",
    "RETRYABLE_ERRORS",
    "SUPPORTED_VERSIONS",
    "HesAction",
    "HesBatchAccepted",
    "HesBatchRejected",
    "HesCommand",
    "HesCommandResult",
    "HesControlState",
    "HesError",
    "HesErrorCode",
    "HesFrame",
    "HesFrameReader",
    "HesHeartbeat",
    "HesHello",
    "HesInspect",
    "HesInspection",
    "HesMeterState",
    "HesPressButton",
    "HesRead",
    "HesReads",
    "HesRejectReason",
    "HesRejection",
    "HesResultStatus",
    "HesResults",
    "HesSubmit",
    "HesWelcome",
    "choose_version",
    "decode_frame",
    "encode_frame",
    "encode_frames",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_BATCH = 100_000
MAX_ID_CHARS = 128
MAX_READ_WH = 10_000_000  # one read's energy (docs/prepaid-contract.md: energy_wh ≤ 10^7)
_MAX_TEXT_CHARS = 4096
_PREFIX = 4


class HesAction(IntEnum):
    """What a command asks of a meter's disconnect control (DLMS class 70, OBIS 0-0:96.3.10.255)."""

    DISCONNECT = 1  # method 1 remote_disconnect
    CONNECT = 2  # method 2 remote_reconnect
    READ = 3  # get attributes 2-4 (output_state, control_state, control_mode)
    # Tell a meter that keeps its own prepaid credit its balance (CIM 3.20.22.13 credit update; issue 16).
    # Not a reference-protocol action: its adapter (and the DLMS one) end it FAILED "unsupported" at once,
    # and the wire refuses it (`_ACTIONS`); the CIM adapter sends it as an EndDeviceControl.
    CREDIT = 4


class HesControlState(IntEnum):
    """Class-70 attribute 3. Only CONNECTED has the relay closed (output_state true)."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


class HesResultStatus(IntEnum):
    """IEC 61968-9 EndDeviceEvent outcome of one command."""

    PROCESSED = 0
    ERROR = 1
    EXPIRED = 2  # expires_at passed before the head-end could execute it; it never ran


class HesErrorCode(StrEnum):
    """Known per-command error codes (`HesCommandResult.error`) and error-frame codes (`HesError.code`).

    The wire carries plain strings so that a newer head-end's codes still decode; unknown codes are
    treated as not retryable.
    """

    # per command, from the meter or the network to it
    NO_COMMUNICATION = "no_communication"  # meter unreachable now; retryable
    RELAY_STUCK = "relay_stuck"  # relay did not move; needs a field visit
    LOAD_SIDE_VOLTAGE_PRESENT = "load_side_voltage_present"  # backfeed: closing is unsafe
    NOT_PERMITTED = "not_permitted"  # control_mode forbids the transition (mode 0)
    # error frames
    MALFORMED = "malformed"
    UNKNOWN_FRAME = "unknown_frame"
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"
    UNSUPPORTED = "unsupported"


RETRYABLE_ERRORS: frozenset[str] = frozenset({HesErrorCode.NO_COMMUNICATION})


class HesRejectReason(StrEnum):
    """Why a head-end refused a command (or a whole batch) at submission."""

    UNKNOWN_METER = "unknown_meter"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    MALFORMED = "malformed"


# --- records inside batch frames -------------------------------------------------------------


class HesCommand(NamedTuple):
    """One command in a submit. `expires_at` is epoch seconds: after it the command must not run.
    `credit_paise`: the balance a CREDIT command carries (None for every other action; never on the
    reference wire, whose decoder leaves it None)."""

    command_id: str
    meter: str
    action: HesAction
    expires_at: float
    credit_paise: int | None = None


class HesRejection(NamedTuple):
    """One refused command of an otherwise accepted batch; `reason` is a `HesRejectReason` value."""

    command_id: str
    reason: str


class HesCommandResult(NamedTuple):
    """The head-end's report on one command: status, the relay as it saw it, and when."""

    command_id: str
    meter: str
    status: HesResultStatus
    control_state: HesControlState | None
    output_state: bool | None
    control_mode: int | None
    error: str | None
    at: float


class HesMeterState(NamedTuple):
    """A meter's true relay (simulator inspection); control_state None means no such meter."""

    meter: str
    control_state: HesControlState | None
    output_state: bool | None
    control_mode: int | None


class HesRead(NamedTuple):
    """One meter's consumption over one IST day: `day` ISO ``YYYY-MM-DD``, `energy_wh` whole Wh imported
    that day, `register_wh` the cumulative import register (OBIS 1.0.1.8.0.255) at its end, or None.
    `read_id` is the idempotency key (the simulator's: ``"{serial}:{day}"``)."""

    serial: str
    read_id: str
    day: str
    energy_wh: int
    register_wh: int | None = None


# --- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HesHello:
    """First frame from the client: who it is and which protocol versions it speaks."""

    client: str
    versions: tuple[int, ...] = SUPPORTED_VERSIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class HesWelcome:
    """The head-end's answer to hello: the chosen version and its limits (0 rate = unlimited).

    `rate_limit` caps switching commands (connect/disconnect) per second on this connection;
    `read_rate_limit` caps reads. Commands above them are rejected ``rate_limited``.
    """

    version: int
    server: str
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_batch: int = 10_000
    rate_limit: float = 0.0
    read_rate_limit: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HesSubmit:
    """A batch of commands; answered by one `HesBatchAccepted` or `HesBatchRejected`."""

    batch_id: int
    commands: tuple[HesCommand, ...]

    def __repr__(self) -> str:
        return f"HesSubmit(batch_id={self.batch_id}, commands=<{len(self.commands)}>)"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HesBatchAccepted:
    """The head-end took the batch: every command in it is accepted except those in `rejected`."""

    batch_id: int
    rejected: tuple[HesRejection, ...] = ()

    def __repr__(self) -> str:
        return f"HesBatchAccepted(batch_id={self.batch_id}, rejected=<{len(self.rejected)}>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class HesBatchRejected:
    """The head-end refused the whole batch; `reason` is a `HesRejectReason` value."""

    batch_id: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HesResults:
    """Per-command results, in any order; a result may arrive twice or never."""

    results: tuple[HesCommandResult, ...]

    def __repr__(self) -> str:
        return f"HesResults(results=<{len(self.results)}>)"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HesReads:
    """Consumption reads, head-end → client, unasked (tag 9; an older client answers unknown_frame)."""

    reads: tuple[HesRead, ...]

    def __repr__(self) -> str:
        return f"HesReads(reads=<{len(self.reads)}>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class HesHeartbeat:
    """Liveness: the head-end echoes every heartbeat it receives with the same `seq`."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HesError:
    """A frame the peer could not use. `fatal`: the sender closes the connection after this frame."""

    code: str
    detail: str = ""
    batch_id: int | None = None
    fatal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HesInspect:
    """Simulator only: ask for the true relay state of `meters`; answered by `HesInspection`."""

    query_id: int
    meters: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HesPressButton:
    """Simulator only: the consumer presses each meter's button; answered by `HesInspection`."""

    query_id: int
    meters: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class HesInspection:
    """Simulator only: true relay states, in the order asked."""

    query_id: int
    states: tuple[HesMeterState, ...]

    def __repr__(self) -> str:
        return f"HesInspection(query_id={self.query_id}, states=<{len(self.states)}>)"


HesFrame = (
    HesHello
    | HesWelcome
    | HesSubmit
    | HesBatchAccepted
    | HesBatchRejected
    | HesResults
    | HesReads
    | HesHeartbeat
    | HesError
    | HesInspect
    | HesPressButton
    | HesInspection
)

# --- version negotiation ---------------------------------------------------------------------


def choose_version(offered: Sequence[int], supported: Sequence[int] = SUPPORTED_VERSIONS) -> int | None:
    """The highest version both sides speak, or None (answer `HesError(unsupported_version)`)."""
    common = set(offered) & set(supported)
    return max(common) if common else None


# --- encoding --------------------------------------------------------------------------------

_TAG_HELLO = 1
_TAG_WELCOME = 2
_TAG_SUBMIT = 3
_TAG_BATCH_ACCEPTED = 4
_TAG_BATCH_REJECTED = 5
_TAG_RESULTS = 6
_TAG_HEARTBEAT = 7
_TAG_ERROR = 8
_TAG_READS = 9
_TAG_INSPECT = 20
_TAG_PRESS_BUTTON = 21
_TAG_INSPECTION = 22


def _to_wire(frame: HesFrame) -> list[Any]:
    """The explicit field mapping of every frame (the inverse of the `_decode_*` functions)."""
    if isinstance(frame, HesSubmit):
        return [_TAG_SUBMIT, frame.batch_id, frame.commands]
    if isinstance(frame, HesResults):
        return [_TAG_RESULTS, frame.results]
    if isinstance(frame, HesReads):
        return [_TAG_READS, frame.reads]
    if isinstance(frame, HesBatchAccepted):
        return [_TAG_BATCH_ACCEPTED, frame.batch_id, frame.rejected]
    if isinstance(frame, HesBatchRejected):
        return [_TAG_BATCH_REJECTED, frame.batch_id, frame.reason, frame.detail]
    if isinstance(frame, HesHeartbeat):
        return [_TAG_HEARTBEAT, frame.seq]
    if isinstance(frame, HesHello):
        return [_TAG_HELLO, frame.client, frame.versions]
    if isinstance(frame, HesWelcome):
        return [
            _TAG_WELCOME,
            frame.version,
            frame.server,
            frame.max_frame_bytes,
            frame.max_batch,
            frame.rate_limit,
            frame.read_rate_limit,
        ]
    if isinstance(frame, HesError):
        return [_TAG_ERROR, frame.code, frame.detail, frame.batch_id, frame.fatal]
    if isinstance(frame, HesInspect):
        return [_TAG_INSPECT, frame.query_id, frame.meters]
    if isinstance(frame, HesPressButton):
        return [_TAG_PRESS_BUTTON, frame.query_id, frame.meters]
    if isinstance(frame, HesInspection):
        return [_TAG_INSPECTION, frame.query_id, frame.states]
    raise TypeError(f"not a head-end frame: {type(frame).__name__}")


def encode_frame(frame: HesFrame) -> bytes:
    """Length prefix + msgpack body of one frame."""
    body: bytes = msgpack.packb(_to_wire(frame), use_bin_type=True)
    return len(body).to_bytes(_PREFIX, "big") + body


def encode_frames(frames: Sequence[HesFrame]) -> bytes:
    """Several frames, concatenated, ready for one write."""
    return b"".join(encode_frame(f) for f in frames)


# --- decoding: field checks ------------------------------------------------------------------


def _fail(message: str, batch_id: int | None = None) -> FrameError:
    return FrameError(message, code=HesErrorCode.MALFORMED, batch_id=batch_id)


def _int(v: object, name: str) -> int:
    if type(v) is not int:
        raise _fail(f"{name}: expected int, got {type(v).__name__}")
    return v


def _count(v: object, name: str) -> int:
    n = _int(v, name)
    if n < 0 or n > 2**63 - 1:
        raise _fail(f"{name}: out of range")
    return n


def _float(v: object, name: str) -> float:
    if type(v) is float:
        f = v
    elif type(v) is int:
        f = float(v)
    else:
        raise _fail(f"{name}: expected number, got {type(v).__name__}")
    if not math.isfinite(f):
        raise _fail(f"{name}: not finite")
    return f


def _rate(v: object, name: str) -> float:
    f = _float(v, name)
    if f < 0:
        raise _fail(f"{name}: negative")
    return f


def _bool(v: object, name: str) -> bool:
    if type(v) is not bool:
        raise _fail(f"{name}: expected bool, got {type(v).__name__}")
    return v


def _text(v: object, name: str, limit: int = _MAX_TEXT_CHARS) -> str:
    if type(v) is not str:
        raise _fail(f"{name}: expected str, got {type(v).__name__}")
    if len(v) > limit:
        raise _fail(f"{name}: longer than {limit} characters")
    return v


def _ident(v: object, name: str) -> str:
    if type(v) is not str or not v or len(v) > MAX_ID_CHARS:
        raise _fail(f"{name}: expected a non-empty str of at most {MAX_ID_CHARS} characters")
    return v


def _seq(v: object, name: str, limit: int = MAX_BATCH) -> list[Any]:
    if type(v) is not list:
        raise _fail(f"{name}: expected array, got {type(v).__name__}")
    if len(v) > limit:
        raise _fail(f"{name}: more than {limit} items")
    return v


def _fields(items: list[Any], n: int, name: str) -> list[Any]:
    if len(items) < n:
        raise _fail(f"{name}: expected {n} fields, got {len(items)}")
    return items


_ACTIONS = {int(a): a for a in HesAction if a is not HesAction.CREDIT}  # (the wire has no credit update)
_STATUSES = {int(s): s for s in HesResultStatus}
_CONTROL_STATES: dict[object, HesControlState | None] = {int(s): s for s in HesControlState}
_CONTROL_STATES[None] = None
_OPT_BOOL: dict[object, bool | None] = {True: True, False: False, None: None}


def _enum_of(table: dict[Any, Any], v: object, name: str) -> Any:
    # `type(v) is int` first: True == 1 and 1.0 == 1 would otherwise pass the lookup
    if type(v) is not int and v is not None:
        raise _fail(f"{name}: expected int, got {type(v).__name__}")
    try:
        return table[v]
    except KeyError:
        raise _fail(f"{name}: unknown value {v!r}") from None


def _opt_mode(v: object, name: str) -> int | None:
    if v is None:
        return None
    if type(v) is not int or not 0 <= v <= 6:
        raise _fail(f"{name}: expected control mode 0-6 or nil")
    return v


def _opt_text(v: object, name: str) -> str | None:
    return None if v is None else _text(v, name, MAX_ID_CHARS)


# --- decoding: frames ------------------------------------------------------------------------


def _decode_command(rec: object) -> HesCommand:
    if type(rec) is not list or len(rec) < 4:
        raise _fail("commands[]: expected [command_id, meter, action, expires_at]")
    return HesCommand(
        _ident(rec[0], "command_id"),
        _ident(rec[1], "meter"),
        _enum_of(_ACTIONS, rec[2], "action"),
        _float(rec[3], "expires_at"),
        None,
    )


def _decode_commands(records: list[Any]) -> tuple[HesCommand, ...]:
    """Fast path for the common, well-formed record; anything unusual goes to `_decode_command`."""
    out: list[HesCommand] = []
    append, actions, new, limit = out.append, _ACTIONS, tuple.__new__, MAX_ID_CHARS
    for rec in records:
        if type(rec) is list and len(rec) >= 4:
            cid, meter, action, exp = rec[0], rec[1], rec[2], rec[3]
            if (
                type(cid) is str
                and type(meter) is str
                and type(action) is int
                and type(exp) is float
                and 0 < len(cid) <= limit
                and 0 < len(meter) <= limit
                and action in actions
                and exp - exp == 0.0  # finite: inf - inf and nan - nan are nan
            ):
                append(new(HesCommand, (cid, meter, actions[action], exp, None)))
                continue
        append(_decode_command(rec))
    return tuple(out)


def _decode_submit(f: list[Any]) -> HesSubmit:
    _fields(f, 3, "submit")
    batch_id = _count(f[1], "batch_id")
    try:
        commands = _decode_commands(_seq(f[2], "commands"))
    except FrameError as e:
        raise FrameError(str(e), code=e.code, batch_id=batch_id) from None
    return HesSubmit(batch_id=batch_id, commands=commands)


def _decode_result(rec: object) -> HesCommandResult:
    if type(rec) is not list or len(rec) < 8:
        raise _fail("results[]: expected 8 fields")
    status = _enum_of(_STATUSES, rec[2], "status")
    output = rec[4]
    if output is not None and type(output) is not bool:
        raise _fail("output_state: expected bool or nil")
    return HesCommandResult(
        _ident(rec[0], "command_id"),
        _ident(rec[1], "meter"),
        status,
        _enum_of(_CONTROL_STATES, rec[3], "control_state"),
        output,
        _opt_mode(rec[5], "control_mode"),
        _opt_text(rec[6], "error"),
        _float(rec[7], "at"),
    )


def _decode_result_records(records: list[Any]) -> tuple[HesCommandResult, ...]:
    """Fast path for the common, well-formed record; anything unusual goes to `_decode_result`."""
    out: list[HesCommandResult] = []
    append, statuses, states, new, limit = out.append, _STATUSES, _CONTROL_STATES, tuple.__new__, MAX_ID_CHARS
    bools = _OPT_BOOL
    for rec in records:
        if type(rec) is list and len(rec) >= 8:
            cid, meter, status, cs, output, mode, error, at = rec if len(rec) == 8 else rec[:8]
            if (
                type(cid) is str
                and type(meter) is str
                and type(status) is int
                and (cs is None or type(cs) is int)
                and (output is None or type(output) is bool)
                and (mode is None or (type(mode) is int and 0 <= mode <= 6))
                and (error is None or (type(error) is str and len(error) <= limit))
                and type(at) is float
                and 0 < len(cid) <= limit
                and 0 < len(meter) <= limit
                and status in statuses
                and cs in states
                and at - at == 0.0
            ):
                append(
                    new(
                        HesCommandResult,
                        (cid, meter, statuses[status], states[cs], bools[output], mode, error, at),
                    )
                )
                continue
        append(_decode_result(rec))
    return tuple(out)


def _decode_results(f: list[Any]) -> HesResults:
    _fields(f, 2, "results")
    return HesResults(results=_decode_result_records(_seq(f[1], "results")))


def _decode_read(rec: object) -> HesRead:
    if type(rec) is not list or len(rec) < 4:
        raise _fail("reads[]: expected [serial, read_id, day, energy_wh, register_wh]")
    day = _text(rec[2], "day", 10)
    try:
        if len(day) != 10:
            raise ValueError(day)
        date.fromisoformat(day)
    except ValueError:
        raise _fail(f"day: expected an ISO date YYYY-MM-DD, got {day!r}") from None
    energy = _int(rec[3], "energy_wh")
    if not 0 <= energy <= MAX_READ_WH:
        raise _fail(f"energy_wh: {energy} is outside 0..{MAX_READ_WH}")
    register = rec[4] if len(rec) > 4 else None
    if register is not None and (type(register) is not int or not 0 <= register <= 2**63 - 1):
        raise _fail("register_wh: expected an int ≥ 0 or nil")
    return HesRead(_ident(rec[0], "serial"), _ident(rec[1], "read_id"), day, energy, register)


def _decode_reads(f: list[Any]) -> HesReads:
    _fields(f, 2, "reads")
    return HesReads(reads=tuple([_decode_read(r) for r in _seq(f[1], "reads")]))


def _decode_rejection(rec: object) -> HesRejection:
    if type(rec) is not list or len(rec) < 2:
        raise _fail("rejected[]: expected [command_id, reason]")
    return HesRejection(_ident(rec[0], "command_id"), _text(rec[1], "reason", MAX_ID_CHARS))


def _decode_batch_accepted(f: list[Any]) -> HesBatchAccepted:
    _fields(f, 3, "batch_accepted")
    return HesBatchAccepted(
        batch_id=_count(f[1], "batch_id"),
        rejected=tuple([_decode_rejection(r) for r in _seq(f[2], "rejected")]),
    )


def _decode_batch_rejected(f: list[Any]) -> HesBatchRejected:
    _fields(f, 4, "batch_rejected")
    return HesBatchRejected(
        batch_id=_count(f[1], "batch_id"),
        reason=_text(f[2], "reason", MAX_ID_CHARS),
        detail=_text(f[3], "detail"),
    )


def _decode_hello(f: list[Any]) -> HesHello:
    _fields(f, 3, "hello")
    versions = tuple(_count(v, "versions[]") for v in _seq(f[2], "versions", 64))
    return HesHello(client=_text(f[1], "client", MAX_ID_CHARS), versions=versions)


def _decode_welcome(f: list[Any]) -> HesWelcome:
    _fields(f, 7, "welcome")
    max_frame = _count(f[3], "max_frame_bytes")
    max_batch = _count(f[4], "max_batch")
    if max_frame < 64 or max_batch < 1:
        raise _fail("welcome: limits too small")
    return HesWelcome(
        version=_count(f[1], "version"),
        server=_text(f[2], "server", MAX_ID_CHARS),
        max_frame_bytes=max_frame,
        max_batch=max_batch,
        rate_limit=_rate(f[5], "rate_limit"),
        read_rate_limit=_rate(f[6], "read_rate_limit"),
    )


def _decode_heartbeat(f: list[Any]) -> HesHeartbeat:
    _fields(f, 2, "heartbeat")
    return HesHeartbeat(seq=_count(f[1], "seq"))


def _decode_error(f: list[Any]) -> HesError:
    _fields(f, 5, "error")
    return HesError(
        code=_text(f[1], "code", MAX_ID_CHARS),
        detail=_text(f[2], "detail"),
        batch_id=None if f[3] is None else _count(f[3], "batch_id"),
        fatal=_bool(f[4], "fatal"),
    )


def _decode_meters(f: list[Any], name: str) -> tuple[int, tuple[str, ...]]:
    _fields(f, 3, name)
    return _count(f[1], "query_id"), tuple(_ident(m, "meters[]") for m in _seq(f[2], "meters"))


def _decode_inspect(f: list[Any]) -> HesInspect:
    query_id, meters = _decode_meters(f, "inspect")
    return HesInspect(query_id=query_id, meters=meters)


def _decode_press_button(f: list[Any]) -> HesPressButton:
    query_id, meters = _decode_meters(f, "press_button")
    return HesPressButton(query_id=query_id, meters=meters)


def _decode_meter_state(rec: object) -> HesMeterState:
    if type(rec) is not list or len(rec) < 4:
        raise _fail("states[]: expected 4 fields")
    output = rec[2]
    if output is not None and type(output) is not bool:
        raise _fail("output_state: expected bool or nil")
    return HesMeterState(
        _ident(rec[0], "meter"),
        _enum_of(_CONTROL_STATES, rec[1], "control_state"),
        output,
        _opt_mode(rec[3], "control_mode"),
    )


def _decode_inspection(f: list[Any]) -> HesInspection:
    _fields(f, 3, "inspection")
    return HesInspection(
        query_id=_count(f[1], "query_id"),
        states=tuple([_decode_meter_state(r) for r in _seq(f[2], "states")]),
    )


_DECODERS: dict[int, Callable[[list[Any]], HesFrame]] = {
    _TAG_HELLO: _decode_hello,
    _TAG_WELCOME: _decode_welcome,
    _TAG_SUBMIT: _decode_submit,
    _TAG_BATCH_ACCEPTED: _decode_batch_accepted,
    _TAG_BATCH_REJECTED: _decode_batch_rejected,
    _TAG_RESULTS: _decode_results,
    _TAG_READS: _decode_reads,
    _TAG_HEARTBEAT: _decode_heartbeat,
    _TAG_ERROR: _decode_error,
    _TAG_INSPECT: _decode_inspect,
    _TAG_PRESS_BUTTON: _decode_press_button,
    _TAG_INSPECTION: _decode_inspection,
}


def decode_frame(body: bytes | bytearray | memoryview) -> HesFrame:
    """Decode one frame body (without its length prefix). Raises `FrameError` for anything malformed."""
    try:
        items = msgpack.unpackb(
            body, raw=False, use_list=True, strict_map_key=True, max_ext_len=0, max_bin_len=0
        )
    except Exception as e:  # msgpack raises many types on garbage; all mean the same thing here
        raise FrameError(f"body is not one msgpack value: {type(e).__name__}") from None
    if type(items) is not list or not items or type(items[0]) is not int:
        raise _fail("body: expected [tag, fields...]")
    decoder = _DECODERS.get(items[0])
    if decoder is None:
        raise FrameError(f"unknown frame tag {items[0]}", code=HesErrorCode.UNKNOWN_FRAME)
    try:
        return decoder(items)
    except FrameError:
        raise
    except Exception as e:  # defensive: a checker missed a shape; still only FrameError escapes
        raise _fail(f"body: {type(e).__name__}") from None


class HesFrameReader:
    """Splits a byte stream into frames.

    `feed` the bytes as they arrive, then call `next_frame` until it returns None. A malformed body
    raises `FrameError` (fatal false) after its bytes were consumed: the stream stays in sync and the
    next call goes on with the next frame. A length prefix above `max_frame_bytes` raises a fatal
    `FrameError`, and so does every later call: close the connection.
    """

    __slots__ = ("_broken", "_buf", "_pos", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> HesFrame | None:
        if self._broken:
            raise FrameError("stream already broken by an oversized frame", code="too_large", fatal=True)
        buf, pos = self._buf, self._pos
        if len(buf) - pos < _PREFIX:
            return None
        size = int.from_bytes(buf[pos : pos + _PREFIX], "big")
        if size > self.max_frame_bytes:
            self._broken = True
            raise FrameError(
                f"frame of {size} bytes exceeds the {self.max_frame_bytes}-byte limit",
                code=HesErrorCode.TOO_LARGE,
                fatal=True,
            )
        end = pos + _PREFIX + size
        if len(buf) < end:
            return None
        self._pos = end
        # a copy, so no memoryview export outlives this call (it would block resizing the buffer)
        with memoryview(buf) as view:
            body = bytes(view[pos + _PREFIX : end])
        return decode_frame(body)
