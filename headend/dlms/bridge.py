"""`DlmsBridge`: jodo's own head-end for DLMS meters, sans-I/O: reference-protocol frames in, DLMS out.

The gateway's contract (batching, per-command timeout, retries with backoff, read-back before success,
expiry, the breaker) lives in `headend.adapter.HeadEndAdapterCore`, which speaks the reference protocol.
Rather than a second copy of that policy, the DLMS adapter keeps the core and gives it an in-process
peer: this bridge answers the core's frames (hello → welcome, heartbeat → echo, submit → accepted,
results later) and executes each command over DLMS associations:

- CONNECT / DISCONNECT: ACTION class 70 method 2 / 1 → ``processed`` (the core then asks for a READ)
  or an error (`headend.dlms.codes`); READ: GET-with-list of attributes 2, 3, 4 → the relay state.
- One association per meter (the meter's logical device = the destination wPort, `DlmsSettings.wport`),
  a bounded pool of them per head-end (`pool_size` TCP connections at most). An association is kept
  open `idle_release` seconds after its last request, so a switch and its read-back (and the next
  command for that meter) reuse it; when the pool is full the longest-idle one is released (RLRQ).
- Commands for one meter run one at a time, in order. A command not started within `queue_timeout`
  of its submission is answered ``no_communication`` (never ran, retryable): the core's own
  command_timeout must not fire on a command still queued here.
- A switching command whose answer never comes (`response_timeout`) or whose connection drops gets no
  result at all: its fate is unknown, and the core's command_timeout path (read first, then retry or
  end) is the one that decides — the read tells whether it ran.

I/O is the driver's (`headend.dlms.driver`): the bridge asks it to open, write to and close links
(`LinkOpen`, `LinkWrite`, `LinkClose`) and is told what happened (`link_*`); bytes for the core
come out of `take_core_bytes`.
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from headend.dlms.association import (
    ActionDone,
    Associated,
    DlmsAssociation,
    DlmsReply,
    ProtocolFault,
    ReadDone,
    Refused,
    Released,
)
from headend.dlms.codes import ASSOCIATION_REFUSED, code_for_result
from headend.dlms.settings import DlmsSettings
from protocols.errors import FrameError
from protocols.headend import (
    SUPPORTED_VERSIONS,
    HesAction,
    HesBatchAccepted,
    HesCommand,
    HesCommandResult,
    HesControlState,
    HesErrorCode,
    HesFrameReader,
    HesHeartbeat,
    HesHello,
    HesRejection,
    HesRejectReason,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
    encode_frame,
)

__all__ = ["BridgeStats", "DlmsBridge", "LinkClose", "LinkOpen", "LinkWrite", "stats_events"]

log = logging.getLogger("jodo.headend.dlms")

_NO_COMM = str(HesErrorCode.NO_COMMUNICATION)
_METHOD = {HesAction.DISCONNECT: 1, HesAction.CONNECT: 2}


@dataclass(frozen=True, slots=True)
class LinkOpen:
    link: int


@dataclass(frozen=True, slots=True)
class LinkWrite:
    link: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LinkClose:
    link: int


LinkAction = LinkOpen | LinkWrite | LinkClose


@dataclass(slots=True)
class BridgeStats:
    associations: int = 0  # AARQ accepted
    refused: int = 0  # AARE rejected
    connect_failures: int = 0
    releases: int = 0
    actions: int = 0
    reads: int = 0
    response_timeouts: int = 0
    protocol_faults: int = 0
    queue_timeouts: int = 0
    reused: int = 0  # requests sent on an association opened for an earlier request
    max_links: int = 0  # most connections open at once (≤ pool_size)


_EVENT_FIELDS = (("association", "associations"), ("refused", "refused"),
                 ("connect_failure", "connect_failures"), ("release", "releases"),
                 ("response_timeout", "response_timeouts"), ("protocol_fault", "protocol_faults"),
                 ("queue_timeout", "queue_timeouts"))  # fmt: skip


def stats_events(now: BridgeStats, before: BridgeStats) -> list[tuple[str, int]]:
    """(event, count) for each counter that went up since `before` (`jodo_dlms_events_total`)."""
    out = []
    for event, name in _EVENT_FIELDS:
        n = getattr(now, name) - getattr(before, name)
        if n > 0:
            out.append((event, n))
    return out


@dataclass(slots=True)
class _Op:
    wid: str
    meter: str
    action: HesAction
    expires_at: float
    queued_until: float


# link phases
_CONNECTING, _ASSOCIATING, _READY, _BUSY, _RELEASING = range(5)


@dataclass(slots=True)
class _Link:
    id: int
    meter: str
    assoc: DlmsAssociation
    phase: int = _CONNECTING
    op: _Op | None = None
    deadline: float = 0.0
    idle_since: float = 0.0
    requests: int = 0


@dataclass(slots=True)
class _Meter:
    ops: deque[_Op] = field(default_factory=deque)
    link: int | None = None
    waiting: bool = False


class DlmsBridge:
    """Executes the core's commands over a pool of DLMS associations. Not thread-safe."""

    def __init__(self, settings: DlmsSettings) -> None:
        self.settings = settings
        self.stats = BridgeStats()
        self._reader = HesFrameReader()
        self._to_core: list[bytes] = []
        self._results: list[HesCommandResult] = []
        self._actions: list[LinkAction] = []
        self._meters: dict[str, _Meter] = {}
        self._waiting: deque[str] = deque()  # meters with ops and no link yet
        self._links: dict[int, _Link] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()  # READY links, longest idle first
        self._next_link = 0
        self._timers: list[tuple[float, int, int]] = []  # (due, link id, requests at arming)

    # --- the core's side --------------------------------------------------------------------

    def from_core(self, data: bytes, now: float) -> list[LinkAction]:
        self._reader.feed(data)
        while True:
            try:
                frame = self._reader.next_frame()
            except FrameError:  # our own core wrote it: a bug, not a peer to forgive
                raise
            if frame is None:
                break
            if isinstance(frame, HesHello):
                self._reply(HesWelcome(
                    version=max(set(frame.versions) & set(SUPPORTED_VERSIONS)), server="jodo-dlms-bridge",
                    max_batch=self.settings.max_batch, rate_limit=self.settings.rate_limit,
                ))  # fmt: skip
            elif isinstance(frame, HesHeartbeat):
                self._reply(frame)
            elif isinstance(frame, HesSubmit):
                self._submit(frame, now)
        self._pump(now)
        return self._take_actions()

    def pump(self, now: float) -> list[LinkAction]:
        """Start associations for waiting meters (after the core has answered the latest results)."""
        self._pump(now)
        return self._take_actions()

    def take_core_bytes(self) -> bytes:
        if self._results:
            self._reply(HesResults(results=tuple(self._results)))
            self._results.clear()
        out = b"".join(self._to_core)
        self._to_core.clear()
        return out

    def reset(self) -> list[LinkAction]:
        """The core dropped its (virtual) connection: it re-verifies what was out; forget the queue.
        Requests already on a DLMS link finish there; their results are no longer reported."""
        for m in self._meters.values():
            m.ops.clear()
        for link in self._links.values():
            link.op = None
        self._reader = HesFrameReader()
        self._results.clear()
        self._to_core.clear()
        return self._take_actions()

    def _reply(self, frame: HesWelcome | HesHeartbeat | HesBatchAccepted | HesResults) -> None:
        self._to_core.append(encode_frame(frame))

    def _submit(self, frame: HesSubmit, now: float) -> None:
        rejected: list[HesRejection] = []
        for cmd in frame.commands:
            rejection = self._queue(cmd, now)
            if rejection is not None:
                rejected.append(HesRejection(cmd.command_id, rejection))
        self._reply(HesBatchAccepted(batch_id=frame.batch_id, rejected=tuple(rejected)))

    def _queue(self, cmd: HesCommand, now: float) -> str | None:
        if self.settings.wport(cmd.meter) is None:
            return str(HesRejectReason.UNKNOWN_METER)
        if now >= cmd.expires_at:
            return str(HesRejectReason.EXPIRED)
        meter = self._meters.get(cmd.meter)
        if meter is None:
            meter = self._meters[cmd.meter] = _Meter()
        meter.ops.append(_Op(cmd.command_id, cmd.meter, cmd.action, cmd.expires_at,
                             now + self.settings.queue_timeout))
        if meter.link is None and not meter.waiting:
            meter.waiting = True
            self._waiting.append(cmd.meter)
        elif meter.link is not None:
            link = self._links[meter.link]
            if link.phase == _READY:
                self._start_next(link, now)
        return None

    def _result(self, op: _Op, status: HesResultStatus, now: float, *, error: str | None = None,
                read: ReadDone | None = None) -> None:
        self._results.append(HesCommandResult(
            op.wid, op.meter, status,
            None if read is None else HesControlState(read.control_state),
            None if read is None else read.output_state,
            None if read is None else read.control_mode,
            error, now,
        ))  # fmt: skip

    # --- scheduling -------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Give waiting meters an association while the pool has room (or an idle one to release)."""
        waiting = self._waiting
        while waiting:
            meter_id = waiting[0]
            meter = self._meters.get(meter_id)
            if meter is None or not meter.ops:
                waiting.popleft()
                if meter is not None:
                    meter.waiting = False
                    self._forget_if_unused(meter_id, meter)
                continue
            if len(self._links) >= self.settings.pool_size:
                if not self._idle:
                    return  # every association is working; a release or an ending frees one
                victim = self._links[next(iter(self._idle))]
                self._release(victim, now)
                if len(self._links) >= self.settings.pool_size:
                    return  # it closes after its RLRE
            waiting.popleft()
            meter.waiting = False
            self._open(meter_id, meter, now)

    def _open(self, meter_id: str, meter: _Meter, now: float) -> None:
        s = self.settings
        wport = s.wport(meter_id)
        assert wport is not None  # checked when queued
        self._next_link += 1
        link = _Link(self._next_link, meter_id, DlmsAssociation(
            client_wport=s.client_wport, server_wport=wport, password=s.password_bytes()))
        link.deadline = now + s.connect_timeout
        self._links[link.id] = link
        self.stats.max_links = max(self.stats.max_links, len(self._links))
        meter.link = link.id
        self._arm(link)
        self._actions.append(LinkOpen(link.id))

    def _start_next(self, link: _Link, now: float) -> None:
        meter = self._meters.get(link.meter)
        while meter is not None and meter.ops:
            op = meter.ops.popleft()
            if now >= op.expires_at:
                self._result(op, HesResultStatus.EXPIRED, now)  # never ran
                continue
            if now >= op.queued_until:
                self.stats.queue_timeouts += 1
                log.info("DLMS command not started in time", extra={"meter": op.meter, "command_id": op.wid})
                self._result(op, HesResultStatus.ERROR, now, error=_NO_COMM)
                continue
            self._idle.pop(link.id, None)
            link.phase, link.op = _BUSY, op
            link.deadline = now + self.settings.response_timeout
            if link.requests:
                self.stats.reused += 1
            link.requests += 1
            if op.action is HesAction.READ:
                self.stats.reads += 1
                data = link.assoc.read()
            else:
                self.stats.actions += 1
                data = link.assoc.action(_METHOD[op.action])
            self._arm(link)
            self._actions.append(LinkWrite(link.id, data))
            return
        link.phase, link.op, link.idle_since = _READY, None, now
        self._idle[link.id] = None
        self._idle.move_to_end(link.id)
        link.deadline = now + self.settings.idle_release
        self._arm(link)
        # no pump here: the core's read-back for this meter is on its way and should find the link
        # open; the driver calls `pump` once the core has had its say

    def _release(self, link: _Link, now: float) -> None:
        self._idle.pop(link.id, None)
        meter = self._meters.get(link.meter)
        if meter is not None and meter.link == link.id:
            meter.link = None  # new ops for this meter wait for a new association
        link.phase = _RELEASING
        link.deadline = now + self.settings.response_timeout
        self._arm(link)
        self.stats.releases += 1
        self._actions.append(LinkWrite(link.id, link.assoc.rlrq()))

    def _drop(self, link: _Link, now: float, *, close: bool = True) -> None:
        """The link is gone. Its queued ops go back to waiting; the op in flight, if any, is settled
        by the caller."""
        self._links.pop(link.id, None)
        self._idle.pop(link.id, None)
        if close:
            self._actions.append(LinkClose(link.id))
        meter = self._meters.get(link.meter)
        if meter is not None:
            if meter.link == link.id:
                meter.link = None
            if meter.ops and meter.link is None and not meter.waiting:
                meter.waiting = True
                self._waiting.append(link.meter)
            self._forget_if_unused(link.meter, meter)
        self._pump(now)

    def _forget_if_unused(self, meter_id: str, meter: _Meter) -> None:
        if not meter.ops and meter.link is None and not meter.waiting:
            self._meters.pop(meter_id, None)

    def _fail_queued(self, link: _Link, now: float, code: str) -> None:
        """The association could not be made: nothing ran; every op queued for the meter gets `code`."""
        meter = self._meters.get(link.meter)
        if meter is None:
            return
        log.warning("DLMS association to %s failed: %s", link.meter, code,
                    extra={"meter": link.meter, "command_ids": [op.wid for op in meter.ops][:10]})
        while meter.ops:
            op = meter.ops.popleft()
            if now >= op.expires_at:
                self._result(op, HesResultStatus.EXPIRED, now)
            else:
                self._result(op, HesResultStatus.ERROR, now, error=code)

    # --- the links' side --------------------------------------------------------------------

    def link_connected(self, link_id: int, now: float) -> list[LinkAction]:
        link = self._links.get(link_id)
        if link is not None and link.phase == _CONNECTING:
            link.phase = _ASSOCIATING
            link.deadline = now + self.settings.response_timeout
            self._arm(link)
            self._actions.append(LinkWrite(link.id, link.assoc.aarq()))
        return self._take_actions()

    def link_failed(self, link_id: int, now: float, why: str = "") -> list[LinkAction]:
        """A connect failed, or an open connection broke (peer closed, reset)."""
        link = self._links.get(link_id)
        if link is None:
            return self._take_actions()
        if link.phase in (_CONNECTING, _ASSOCIATING):
            self.stats.connect_failures += 1
            self._fail_queued(link, now, _NO_COMM)
        elif link.phase == _BUSY and link.op is not None:
            self._lost(link.op, now)
        self._drop(link, now, close=True)
        return self._take_actions()

    def link_bytes(self, link_id: int, data: bytes, now: float) -> list[LinkAction]:
        link = self._links.get(link_id)
        if link is not None:
            for reply in link.assoc.on_bytes(data):
                if link.id not in self._links:
                    break
                self._on_reply(link, reply, now)
        return self._take_actions()

    def _on_reply(self, link: _Link, reply: DlmsReply, now: float) -> None:
        if isinstance(reply, ProtocolFault):
            self.stats.protocol_faults += 1
            log.warning("DLMS answer from %s not understood: %s", link.meter, reply.why,
                        extra={"meter": link.meter, "command_id": link.op.wid if link.op else None})
            if link.phase == _BUSY and link.op is not None:
                self._lost(link.op, now)
            elif link.phase == _ASSOCIATING:
                self._fail_queued(link, now, _NO_COMM)
            self._drop(link, now)
        elif link.phase == _ASSOCIATING:
            if isinstance(reply, Associated):
                self.stats.associations += 1
                self._start_next(link, now)
            else:
                self.stats.refused += 1
                transient = isinstance(reply, Refused) and reply.transient
                self._fail_queued(link, now, _NO_COMM if transient else ASSOCIATION_REFUSED)
                self._drop(link, now)
        elif link.phase == _BUSY and link.op is not None:
            op, link.op = link.op, None
            if isinstance(reply, ReadDone):
                self._result(op, HesResultStatus.PROCESSED, now, read=reply)
            elif isinstance(reply, ActionDone) and reply.result == 0:
                self._result(op, HesResultStatus.PROCESSED, now)
            elif isinstance(reply, ActionDone):
                self._result(op, HesResultStatus.ERROR, now, error=code_for_result(reply.result))
            self._start_next(link, now)
        elif link.phase == _BUSY:  # the core reset while this was out: the answer has no one to go to
            self._start_next(link, now)
        elif link.phase == _RELEASING and isinstance(reply, Released):
            self._drop(link, now)

    def _lost(self, op: _Op, now: float) -> None:
        """A request whose answer will never come. A read is retried by the core on an error; a switch
        gets nothing: its fate is unknown, the core's command_timeout reads the relay and decides."""
        log.warning("DLMS request to %s lost (%s): fate unknown until read back", op.meter, op.action.name,
                    extra={"meter": op.meter, "command_id": op.wid})
        if op.action is HesAction.READ:
            self._result(op, HesResultStatus.ERROR, now, error=_NO_COMM)

    # --- time -------------------------------------------------------------------------------

    def _arm(self, link: _Link) -> None:
        heapq.heappush(self._timers, (link.deadline, link.id, link.requests * 8 + link.phase))

    def on_tick(self, now: float) -> list[LinkAction]:
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, link_id, token = heapq.heappop(timers)
            link = self._links.get(link_id)
            if link is None or link.deadline != due or token != link.requests * 8 + link.phase:
                continue  # superseded
            if link.phase == _READY:
                self._release(link, now)
            elif link.phase == _RELEASING:
                self._drop(link, now)
            else:
                self.stats.response_timeouts += 1
                if link.phase in (_CONNECTING, _ASSOCIATING):
                    self.stats.connect_failures += 1
                    self._fail_queued(link, now, _NO_COMM)
                elif link.op is not None:
                    self._lost(link.op, now)
                self._drop(link, now)
        self._pump(now)
        return self._take_actions()

    def wake_at(self) -> float | None:
        timers = self._timers
        while timers:
            due, link_id, token = timers[0]
            link = self._links.get(link_id)
            if link is not None and link.deadline == due and token == link.requests * 8 + link.phase:
                return due
            heapq.heappop(timers)
        return None

    # --- introspection ----------------------------------------------------------------------

    @property
    def open_links(self) -> int:
        return len(self._links)

    @property
    def queued(self) -> int:
        return sum(len(m.ops) for m in self._meters.values())

    def links_of(self, meters: Iterable[str]) -> list[int]:
        wanted = set(meters)
        return [link.id for link in self._links.values() if link.meter in wanted]

    def _take_actions(self) -> list[LinkAction]:
        out, self._actions = self._actions, []
        return out
