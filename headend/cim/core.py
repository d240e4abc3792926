"""`CimCore`: the CIM adapter's bookkeeping, sans-I/O — every command ends exactly once.

The driver (HTTP) asks `prepare(commands, now)` for requests to POST (`create EndDeviceControls`,
up to `max_batch` controls each, one CorrelationID per request), then reports what came back:
`on_reply(correlation_id, reply, now)` with the parsed synchronous reply, or `on_transport_error(
correlation_id, sent, status, now)` when no reply was read. The head-end's asynchronous `created
EndDeviceEvents` go to `on_events(events, now)` (after the driver checked the caller with
`authentic`), and `on_tick(now)` ends the commands whose callback never came.

How replies map onto the adapter contract (headend/adapter.py, headend/outcome.py):
- Reply OK: every control is accepted and waits for its event (up to `callback_timeout`).
- Reply PARTIAL: controls named in Error/ID fail with that code (``unknown_meter``: rejected); the rest wait.
- Reply FAILED: every control fails with the (first) code; retryable iff the code is in `retryable_codes`.
- Nothing sent (connect refused): failed ``connection_lost``, retryable. HTTP 429/503: failed
  ``no_communication``, retryable. Other HTTP errors: failed ``cim_http_<status>``, final.
- Sent but no reply read (timeout, dropped): the head-end may have taken it, so the controls keep
  waiting for their events; none by `callback_timeout` → failed ``timeout``, retryable.
- Event PROCESSED: DISCONNECTED / CONNECTED, with "Contactor status" as output_state where given
  (Armed after a reconnect: READY_FOR_RECONNECTION, the button closes it); a contactor contradicting
  the action → failed ``readback_mismatch``. ERROR: failed with `reason`
  (retryable iff in `retryable_codes`). EXPIRED: expired (Connexo cancels on timeout, never ran).
  CANCELLED: failed ``cancelled``.
- An event for an unknown CorrelationID or control, for a command already ended (duplicate) or one
  that timed out (late) is refused and counted, never a second outcome. An event may arrive before
  the synchronous reply (a race the head-end is free to win): it ends the command; the reply's
  verdict on it is then ignored.
READ commands are not EndDeviceControls: they fail ``unsupported`` (final) at once. A CREDIT command (a
prepaid meter's balance, issue 16) is the control 3.20.22.13; its event PROCESSED ends it APPLIED (no
contactor), ERROR / EXPIRED / CANCELLED as for a switch. An event whose ref is not its control's kind
(3.31.0.* for a switch, 3.20.22.* for a credit update) is refused as unknown.
"""

from __future__ import annotations

import hmac
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

from headend.breaker import BreakerPhase
from headend.cim.messages import EVENT_PREFIX_OF, CimEvents, CimReply, EventResult, build_request
from headend.outcome import HeadEndOutcome, OutcomeKind
from protocols.headend import HesAction, HesCommand, HesControlState, HesErrorCode

__all__ = ["CimCore", "CimCoreConfig", "CimRequest", "CimStats"]

_STATE = {HesAction.DISCONNECT: (OutcomeKind.DISCONNECTED, HesControlState.DISCONNECTED, "Opened"),
          HesAction.CONNECT: (OutcomeKind.CONNECTED, HesControlState.CONNECTED, "Closed")}
_ARMED = "Armed"  # after a reconnect: ready_for_reconnection, the consumer's button closes the relay
_REJECT_CODES = frozenset({"unknown_meter"})  # Error/code naming a refusal, not a failure


@dataclass(frozen=True, slots=True, kw_only=True)
class CimCoreConfig:
    source: str = "jodo"  # Header/Source
    reply_address: str = "http://127.0.0.1:8470/cim/events"  # where the head-end posts EndDeviceEvents
    max_batch: int = 500  # controls per request
    callback_timeout: float = 120.0  # accepted → its event; then failed timeout (retryable)
    retryable_codes: frozenset[str] = frozenset({HesErrorCode.NO_COMMUNICATION.value})
    remember: int = 1_000_000  # ended command ids kept to tell duplicate / late callbacks from unknown

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.callback_timeout <= 0 or self.remember < 1:
            raise ValueError("max_batch and remember must be ≥ 1, callback_timeout > 0")


@dataclass(frozen=True, slots=True)
class CimRequest:
    correlation_id: str
    body: bytes  # a validated RequestMessage (not SOAP-wrapped)
    command_ids: tuple[str, ...]


@dataclass(slots=True)
class CimStats:
    requests: int = 0
    accepted: int = 0  # controls the head-end accepted (reply OK / PARTIAL)
    events: int = 0  # events that ended a command
    refused_unknown: int = 0
    refused_duplicate: int = 0
    refused_late: int = 0
    refused_unauthorised: int = 0  # counted by the driver through `authentic`
    refused_malformed: int = 0  # counted by the driver
    timeouts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    command: HesCommand
    correlation_id: str
    deadline: float | None  # set once accepted (or sent with an unknown fate)


class CimCore:
    def __init__(self, config: CimCoreConfig | None = None, *, token: str | None = None) -> None:
        self.config = config or CimCoreConfig()
        self._token = token.encode() if token else None
        self._pending: dict[str, _Pending] = {}
        self._by_correlation: dict[str, set[str]] = {}
        self._ended: OrderedDict[str, bool] = OrderedDict()  # command id → timed out (True) / ended
        self._ids = itertools.count(1)
        self.stats = CimStats()
        self._reported: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    # what the gateway reads of every adapter's core (actors/gateway.py): no breaker here yet — a head-end
    # that is down answers connect refused / 503, which fail retryable at once and cost no state
    breaker_phase = BreakerPhase.CLOSED
    rate_share = 1.0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def set_rate_share(self, share: float) -> None:
        self.rate_share = share  # not applied: the HES paces by its replies (docs/cim.md)

    def take_events(self) -> list[tuple[str, int]]:
        """Counter increments since the last call, for `jodo_cim_events`."""
        s = self.stats
        now = {"request": s.requests, "accepted": s.accepted, "callback_event": s.events,
               "timeout": s.timeouts, "refused_unknown": s.refused_unknown,
               "refused_duplicate": s.refused_duplicate, "refused_late": s.refused_late,
               "refused_unauthorised": s.refused_unauthorised, "refused_malformed": s.refused_malformed}
        out = [(k, v - self._reported.get(k, 0)) for k, v in now.items() if v != self._reported.get(k, 0)]
        self._reported = now
        return out

    def authentic(self, presented: str | None) -> bool:
        """The callback's shared token (constant-time compare); counts refusals."""
        ok = (self._token is not None and presented is not None
              and hmac.compare_digest(presented.encode(), self._token))
        if not ok:
            self.stats.refused_unauthorised += 1
        return ok

    # --- outgoing -----------------------------------------------------------------------------------

    def prepare(
        self, commands: list[HesCommand], now: float
    ) -> tuple[list[CimRequest], list[HeadEndOutcome]]:
        outcomes: list[HeadEndOutcome] = []
        sendable: list[HesCommand] = []
        for c in commands:
            if c.command_id in self._pending or c.command_id in self._ended:
                continue  # already submitted: it has (or will have) its one outcome
            if c.action is HesAction.READ:
                outcomes.append(self._end(c, OutcomeKind.FAILED, now, error="unsupported"))
            elif c.expires_at <= now:
                outcomes.append(self._end(c, OutcomeKind.EXPIRED, now))
            else:
                sendable.append(c)
        requests = []
        step = self.config.max_batch
        for i in range(0, len(sendable), step):
            part = sendable[i:i + step]
            n = next(self._ids)
            corr = f"{self.config.source}-{int(now)}-{n}"
            body = build_request(part, now=now, source=self.config.source, message_id=f"{corr}-m",
                                 correlation_id=corr, reply_address=self.config.reply_address)
            for c in part:
                self._pending[c.command_id] = _Pending(c, corr, None)
            self._by_correlation[corr] = {c.command_id for c in part}
            requests.append(CimRequest(corr, body, tuple(c.command_id for c in part)))
            self.stats.requests += 1
        return requests, outcomes

    # --- the synchronous answer ---------------------------------------------------------------------

    def on_reply(self, correlation_id: str, reply: CimReply, now: float) -> list[HeadEndOutcome]:
        ids = self._by_correlation.get(correlation_id, set())
        if reply.correlation_id != correlation_id:
            return self.on_transport_error(correlation_id, True, None, now)  # not our answer: fate unknown
        outcomes: list[HeadEndOutcome] = []
        named = {mrid: code for code, mrid in reply.errors if mrid is not None}
        first = next((code for code, _ in reply.errors), "cim_failed")
        for cid in list(ids):
            p = self._pending.get(cid)
            if p is None or p.correlation_id != correlation_id:
                continue  # its event came first
            code = {"OK": None, "PARTIAL": named.get(cid), "FAILED": first}.get(reply.result, "cim_bad_reply")
            if code is None:
                p.deadline = now + self.config.callback_timeout
                self.stats.accepted += 1
            elif code in _REJECT_CODES:
                outcomes.append(self._end(p.command, OutcomeKind.REJECTED, now, reason=code))
            else:
                outcomes.append(self._fail(p.command, now, code, code in self.config.retryable_codes))
        return outcomes

    def on_transport_error(self, correlation_id: str, sent: bool, status: int | None,
                           now: float) -> list[HeadEndOutcome]:
        """No reply read. `sent`: the request may have reached the head-end; `status`: an HTTP error."""
        outcomes: list[HeadEndOutcome] = []
        for cid in list(self._by_correlation.get(correlation_id, ())):
            p = self._pending.get(cid)
            if p is None or p.correlation_id != correlation_id:
                continue
            if status in (429, 503):
                outcomes.append(self._fail(p.command, now, HesErrorCode.NO_COMMUNICATION.value, True))
            elif status is not None:
                outcomes.append(self._fail(p.command, now, f"cim_http_{status}", False))
            elif not sent:
                outcomes.append(self._fail(p.command, now, "connection_lost", True))
            elif p.deadline is None:
                p.deadline = now + self.config.callback_timeout  # may have run: wait for its event
        return outcomes

    # --- the asynchronous answer --------------------------------------------------------------------

    def on_events(self, message: CimEvents, now: float) -> tuple[list[HeadEndOutcome], int]:
        """The outcomes the events end, and how many events were refused (unknown/duplicate/late)."""
        outcomes: list[HeadEndOutcome] = []
        refused = 0
        stats = self.stats
        for ev in message.events:
            p = self._pending.get(ev.control_mrid)
            if (p is None or p.correlation_id != message.correlation_id or p.command.meter != ev.meter
                    or ev.prefix != EVENT_PREFIX_OF[p.command.action]):
                refused += 1
                timed_out = self._ended.get(ev.control_mrid) if p is None else None
                if timed_out is None:
                    stats.refused_unknown += 1
                elif timed_out:
                    stats.refused_late += 1
                else:
                    stats.refused_duplicate += 1
                continue
            stats.events += 1
            c = p.command
            if ev.result is EventResult.PROCESSED and c.action is HesAction.CREDIT:
                outcomes.append(self._end(c, OutcomeKind.APPLIED, now))  # the meter holds the balance
            elif ev.result is EventResult.PROCESSED:
                kind, state, contactor = _STATE[c.action]
                if c.action is HesAction.CONNECT and ev.contactor == _ARMED:
                    outcomes.append(self._end(c, OutcomeKind.READY_FOR_RECONNECTION, now,
                                              control_state=HesControlState.READY_FOR_RECONNECTION,
                                              output_state=False))
                elif ev.contactor is not None and ev.contactor != contactor:
                    outcomes.append(self._fail(c, now, "readback_mismatch", True))
                else:
                    output = None if ev.contactor is None else ev.contactor == "Closed"
                    outcomes.append(self._end(c, kind, now, control_state=state, output_state=output))
            elif ev.result is EventResult.ERROR:
                code = ev.reason or "cim_error"
                outcomes.append(self._fail(c, now, code, code in self.config.retryable_codes))
            elif ev.result is EventResult.EXPIRED:
                outcomes.append(self._end(c, OutcomeKind.EXPIRED, now))
            else:
                outcomes.append(self._fail(c, now, "cancelled", False))
        return outcomes, refused

    def on_tick(self, now: float) -> list[HeadEndOutcome]:
        outcomes = []
        for p in [p for p in self._pending.values() if p.deadline is not None and p.deadline <= now]:
            self.stats.timeouts += 1
            outcomes.append(self._fail(p.command, now, "timeout", True, timed_out=True))
        return outcomes

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values() if p.deadline is not None), default=None)

    # --- endings ------------------------------------------------------------------------------------

    def _fail(self, c: HesCommand, now: float, code: str, retryable: bool, *,
              timed_out: bool = False) -> HeadEndOutcome:
        return self._end(c, OutcomeKind.FAILED, now, error=code, retryable=retryable, timed_out=timed_out)

    def _end(self, c: HesCommand, kind: OutcomeKind, now: float, *, error: str | None = None,
             retryable: bool = False, control_state: HesControlState | None = None,
             output_state: bool | None = None, timed_out: bool = False,
             reason: str | None = None) -> HeadEndOutcome:
        p = self._pending.pop(c.command_id, None)
        if p is not None:
            ids = self._by_correlation.get(p.correlation_id)
            if ids is not None:
                ids.discard(c.command_id)
                if not ids:
                    del self._by_correlation[p.correlation_id]
        self._ended[c.command_id] = timed_out
        if len(self._ended) > self.config.remember:
            self._ended.popitem(last=False)
        self.stats.outcomes[kind.value] = self.stats.outcomes.get(kind.value, 0) + 1
        return HeadEndOutcome(command_id=c.command_id, meter=c.meter, action=c.action, kind=kind, at=now,
                              attempts=0 if p is None else 1, error=error, retryable=retryable, reason=reason,
                              control_state=control_state, output_state=output_state)
