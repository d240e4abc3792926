"""The gateway's adapter to one head-end (reference protocol), as a sans-I/O state machine.

`HeadEndAdapterCore` never touches a socket or a clock. Its driver feeds it events with the time:
`submit(commands, now)`, `connection_made(now)`, `connect_failed(now, why)`, `connection_lost(now, why)`,
`on_bytes(data, now)`, `on_tick(now)`; each returns a `HeadEndStep`: bytes to write, final outcomes,
whether to open or close the connection, and when to tick next. Drivers: `headend.socket_driver`
(non-blocking socket, for an actor) and `headend.threaded` (a thread, for tests and the bench).

What it guarantees, per command (by command_id): exactly one `HeadEndOutcome`.
- Never sends a command whose expires_at has passed (outcome EXPIRED, never executed).
- A switching command (connect/disconnect) succeeds only on a read-back: after the head-end reports
  it processed, the adapter sends a READ and classifies the relay it reads (connected, disconnected,
  ready_for_reconnection). A read showing anything else is a mismatch: retried like a failure.
- Retries, with exponential backoff and jitter, only retryable errors (`RETRYABLE_ERRORS`), mismatches
  and timeouts, at most `max_attempts` sends of the switching command; rate-limited rejections wait
  `rate_limited_delay` and do not count. Other errors fail at once.
- A command whose fate is unknown (no result before `command_timeout`, or the connection dropped while
  it was out) is verified by a read before anything else: a relay already in the target state is a
  success, otherwise it is retried (or ends expired/failed). Before any unsuccessful ending of a
  command that may have run, the relay is read once more. Results of earlier sends, duplicates and
  stragglers are recognised by their per-send wire id (``<command_id>/<n>``) and ignored.
- Failure codes: the head-end's (``no_communication``, ``relay_stuck``, ``load_side_voltage_present``,
  ``not_permitted``, or any newer one) and the adapter's own: ``timeout`` and ``connection_lost``
  (retryable: nothing was learnt about the meter), ``readback_mismatch`` (reported processed, read
  back otherwise, on every attempt) and ``inconsistent_state`` (a read whose control_state and
  output_state disagree).
- One persistent connection: hello/version negotiation, heartbeats, reconnect with backoff, and a
  circuit breaker (`headend.breaker`): while it is open no connection is attempted except one probe,
  and commands wait in the queue (expiring on time) rather than storm.
- Consumption reads (`HesReads`, unasked) are kept for the driver's owner to `take_consumption`; they
  carry no command id and change nothing here.
- Pacing: batches of up to `max_batch` commands per frame, at most `max_in_flight` outstanding, and a
  client-side token bucket at `rate_headroom` x the head-end's announced rate limits.

Time: `now` is epoch seconds on the driver's clock (expires_at crosses processes). Call `on_tick`
at `HeadEndStep.wake_at`; an early call is harmless, a late one delays timers and pacing.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from headend.breaker import (
    Breaker,
    BreakerPhase,
    BreakerPolicy,
    breaker_allow,
    breaker_failure,
    breaker_retry_at,
    breaker_success,
)
from headend.outcome import HeadEndOutcome, OutcomeKind, relay_outcome
from protocols.errors import FrameError
from protocols.headend import (
    MAX_ID_CHARS,
    RETRYABLE_ERRORS,
    SUPPORTED_VERSIONS,
    HesAction,
    HesBatchAccepted,
    HesBatchRejected,
    HesCommand,
    HesCommandResult,
    HesControlState,
    HesError,
    HesErrorCode,
    HesFrameReader,
    HesHeartbeat,
    HesHello,
    HesRead,
    HesReads,
    HesRejectReason,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
    encode_frame,
)

__all__ = [
    "AdapterConfig",
    "AdapterStats",
    "ConnectionPhase",
    "HeadEndAdapterCore",
    "HeadEndStep",
]

# failures that say nothing about the meter itself: trying again later may well work
_TRANSIENT = RETRYABLE_ERRORS | {"timeout", "connection_lost"}
_MAX_COMMAND_ID = MAX_ID_CHARS - 12  # room for the "/<send number>" wire suffix
_BYTES_PER_RECORD = 300  # upper bound of one encoded command, to keep frames under the peer's limit


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterConfig:
    """Timeouts and limits (seconds on the driver's clock). Defaults suit a real head-end."""

    client_name: str = "jodo-gateway"
    max_batch: int = 5_000  # commands per submit frame (lowered to the head-end's max_batch)
    max_in_flight: int = 50_000  # sent, not yet resolved
    linger: float = 0.0  # wait this long for more commands before a part-filled frame (needs a tick)
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    ack_timeout: float = 10.0  # submit → accepted/rejected; missing ack = dead connection
    command_timeout: float = 60.0  # submit → result of a switching command; then verify by read
    read_timeout: float = 15.0  # submit → result of a read
    heartbeat_interval: float = 5.0  # send a heartbeat after this long without sending
    idle_timeout: float = 20.0  # nothing received for this long = dead connection
    max_attempts: int = 4  # sends of a switching command (first try included)
    max_reads: int = 5  # failed/unanswered reads of one command before giving up on it
    retry_base: float = 0.5
    retry_multiplier: float = 2.0
    retry_max: float = 30.0
    jitter: float = 0.5  # a retry waits delay x uniform(1 - jitter, 1)
    reconnect_base: float = 0.1
    reconnect_max: float = 10.0
    rate_limited_delay: float = 0.25
    rate_limit: float | None = None  # switching commands/s; the lower of this and the announced one
    read_rate_limit: float | None = None  # reads/s, likewise; None (or ≤ 0) = the announced one
    rate_headroom: float = 0.99  # pace at this fraction of the head-end's announced limits
    rate_bucket_seconds: float = 0.1  # burst the client bucket allows
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_in_flight < 1 or self.max_attempts < 1 or self.max_reads < 1:
            raise ValueError("max_batch, max_in_flight, max_attempts and max_reads must be ≥ 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if not 0.0 < self.rate_headroom <= 1.0:
            raise ValueError("rate_headroom must be in (0, 1]")


def _pace(configured: float | None, announced: float) -> float:
    """The rate to pace at (0 = unpaced): the lower of ours and the head-end's, where either is set."""
    if configured is None or configured <= 0:
        return announced
    return min(configured, announced) if announced > 0 else configured


class ConnectionPhase(StrEnum):
    IDLE = "idle"  # no connection; one opens at the reconnect time if the breaker allows
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    READY = "ready"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadEndStep:
    """What the driver must do after one call. Act on `close` before `connect`, then write `send`."""

    send: bytes = b""
    outcomes: tuple[HeadEndOutcome, ...] = ()
    connect: bool = False  # open a connection now, then report connection_made / connect_failed
    close: bool = False  # close the connection now; the core already counts it as lost
    wake_at: float | None = None  # call on_tick at (or soon after) this time

    def __repr__(self) -> str:
        return (
            f"HeadEndStep(send=<{len(self.send)} B>, outcomes=<{len(self.outcomes)}>, "
            f"connect={self.connect}, close={self.close}, wake_at={self.wake_at})"
        )


@dataclass(slots=True)
class AdapterStats:
    submitted: int = 0
    duplicate_submits: int = 0
    frames_sent: int = 0
    commands_sent: int = 0
    reads_sent: int = 0
    results: int = 0
    stale_results: int = 0  # duplicates and results of sends already resolved
    retries: int = 0
    timeouts: int = 0
    mismatches: int = 0  # read back contradicted a "processed" report
    unconfirmed: int = 0  # a send of unknown fate (timeout, lost connection) proved not to have run
    rate_limited: int = 0
    frame_errors: int = 0
    connects: int = 0
    connection_losses: int = 0
    heartbeats: int = 0
    unsupported: int = 0  # commands this protocol cannot carry (a credit update), failed at once
    reads_received: int = 0  # consumption reads in HesReads frames (passed up by `take_consumption`)


# job phases
_CMD, _CMD_SENT, _READ, _READ_SENT, _WAIT, _DONE = range(6)
# enum members bound once: attribute access on an enum class is a slow descriptor call
_A_READ = HesAction.READ
_A_CREDIT = HesAction.CREDIT
_UNSUPPORTED = HesErrorCode.UNSUPPORTED.value
_PROCESSED = HesResultStatus.PROCESSED

# The relay a read shows, as a kind; keyed by control_state * 2 + output_state so that lookups hash
# plain ints (hashing an enum member runs Python code). Anything else is inconsistent.
_KIND_BY_RELAY: dict[int, OutcomeKind] = {
    HesControlState.CONNECTED * 2 + 1: OutcomeKind.CONNECTED,
    HesControlState.DISCONNECTED * 2 + 0: OutcomeKind.DISCONNECTED,
    HesControlState.READY_FOR_RECONNECTION * 2 + 0: OutcomeKind.READY_FOR_RECONNECTION,
}
_K_DISCONNECTED = OutcomeKind.DISCONNECTED
_A_CONNECT = HesAction.CONNECT


def _classify(action: HesAction, r: HesCommandResult) -> OutcomeKind | None:
    """The outcome a read-back means for `action`, or None if the relay is not where it should be."""
    cs, output = r.control_state, r.output_state
    if cs is None or output is None:
        return None
    kind = _KIND_BY_RELAY.get(cs * 2 + output)
    if kind is None or action is _A_READ:
        return kind
    if action is _A_CONNECT:  # connected, or waiting for the button: both are where a connect ends
        return None if kind is _K_DISCONNECTED else kind
    return kind if kind is _K_DISCONNECTED else None


class _Final:
    """An unsuccessful ending held back until a read shows the relay did not reach the target."""

    __slots__ = ("error", "kind", "reason", "retryable")

    def __init__(
        self, kind: OutcomeKind, error: str | None = None, retryable: bool = False, reason: str | None = None
    ) -> None:
        self.kind, self.error, self.retryable, self.reason = kind, error, retryable, reason


class _Job:
    __slots__ = (
        "attempts",
        "command",
        "held",
        "last_error",
        "maybe_executed",
        "next_phase",
        "phase",
        "reads",
        "sends",
        "token",
    )

    def __init__(self, command: HesCommand) -> None:
        self.command = command
        self.phase = _CMD
        self.next_phase = _CMD
        self.token = 0  # validates backoff-heap entries: only the newest one counts
        self.sends = 0  # wire ids are "<command_id>/<sends>", unique per send
        self.attempts = 0  # switching commands sent
        self.reads = 0  # reads that failed or went unanswered
        self.maybe_executed = False  # a send's fate is unknown: verify before any non-success
        self.held: _Final | None = None
        self.last_error = HesErrorCode.NO_COMMUNICATION.value



class HeadEndAdapterCore:
    """Sans-I/O adapter to one head-end. Not thread-safe: one driver owns it."""

    def __init__(self, config: AdapterConfig | None = None) -> None:
        self.config = cfg = config or AdapterConfig()
        self.stats = AdapterStats()
        self.breaker = Breaker()
        self.phase = ConnectionPhase.IDLE
        self.welcome: HesWelcome | None = None
        self._rng = random.Random(cfg.seed)
        self._reconnect_at = float("-inf")
        self._reconnect_failures = 0
        self._conn_deadline = 0.0
        self._reader = HesFrameReader()
        self._jobs: dict[str, _Job] = {}
        self._wire: dict[str, _Job] = {}
        # Queues hold jobs; an entry is live iff the job is still in that queue's phase. A job leaves
        # a queue without being popped only by expiring (for good, or into a verifying read that can
        # never lead back to a send), so a stale entry can never send anything.
        self._cmd_q: deque[_Job] = deque()
        self._read_q: deque[_Job] = deque()
        self._waits: list[tuple[float, int, int, _Job]] = []
        self._expiry: list[float] = []  # heap of distinct expiry times (a batch often shares one)
        self._expiring: dict[float, list[_Job]] = {}
        self._expiring_count = 0
        self._seq = 0
        self._unacked: dict[int, list[str]] = {}
        self._ack_deadlines: deque[tuple[float, int]] = deque()
        self._cmd_timeouts: deque[tuple[float, list[str]]] = deque()
        self._read_timeouts: deque[tuple[float, list[str]]] = deque()
        self._batch_id = 0
        self._max_batch = cfg.max_batch
        self._rate = 0.0
        self._share = 1.0  # cluster: this node's share of the configured rate limit (set_rate_share)
        self._read_rate = 0.0
        self._tokens = 0.0
        self._read_tokens = 0.0
        self._refilled_at = 0.0
        self._linger_until: float | None = None
        self._last_rx = 0.0
        self._last_tx = 0.0
        self._hb_seq = 0
        self._proven = False
        # per-step output
        self._out: list[bytes] = []
        self._outcomes: list[HeadEndOutcome] = []
        self._connect = False
        self._close = False
        self._reads: list[HesRead] = []  # consumption reads received, not yet taken

    # --- inspection -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Commands submitted and not yet ended."""
        return len(self._jobs)

    @property
    def in_flight(self) -> int:
        return len(self._wire)

    @property
    def breaker_phase(self) -> BreakerPhase:
        return self.breaker.phase

    def take_consumption(self) -> list[HesRead]:
        """The consumption reads received since the last call (`HesReads` frames, in arrival order)."""
        reads, self._reads = self._reads, []
        return reads

    # --- events -----------------------------------------------------------------------------

    def submit(self, commands: Iterable[HesCommand], now: float) -> HeadEndStep:
        """Queue commands. A command id already pending is ignored (its one outcome is still due)."""
        jobs, stats = self._jobs, self.stats
        cmd_q, read_q, expiring = self._cmd_q, self._read_q, self._expiring
        last_t: float | None = None
        bucket: list[_Job] = []
        added = 0
        for cmd in commands:
            stats.submitted += 1
            cid = cmd.command_id
            if cid in jobs:
                stats.duplicate_submits += 1
                continue
            job = _Job(cmd)
            if not cid or len(cid) > _MAX_COMMAND_ID or not cmd.meter or len(cmd.meter) > MAX_ID_CHARS:
                self._emit(job, OutcomeKind.REJECTED, now, reason=HesRejectReason.MALFORMED)
                continue
            if now >= cmd.expires_at:
                self._emit(job, OutcomeKind.EXPIRED, now)
                continue
            if cmd.action is _A_CREDIT:  # the reference protocol has no credit update (issue 16)
                stats.unsupported += 1
                self._emit(job, OutcomeKind.FAILED, now, error=_UNSUPPORTED)
                continue
            jobs[cid] = job
            if cmd.action is _A_READ:
                job.phase = _READ
                read_q.append(job)
            else:
                cmd_q.append(job)
            t = cmd.expires_at
            if t != last_t:
                last_t = t
                found = expiring.get(t)
                if found is None:
                    found = expiring[t] = []
                    heapq.heappush(self._expiry, t)
                bucket = found
            bucket.append(job)
            added += 1
        self._expiring_count += added
        if self._expiring_count > 2 * len(jobs) + 1024:
            self._prune_expiring()
        if self._linger_until is None:
            self._linger_until = now + self.config.linger
        return self._step(now)

    def connection_made(self, now: float) -> HeadEndStep:
        if self.phase is not ConnectionPhase.CONNECTING:
            return self._step(now)
        self.stats.connects += 1
        self.phase = ConnectionPhase.HANDSHAKING
        self._conn_deadline = now + self.config.handshake_timeout
        self._reader = HesFrameReader()
        self._last_rx = now
        self._send(HesHello(client=self.config.client_name, versions=SUPPORTED_VERSIONS), now)
        return self._step(now)

    def connect_failed(self, now: float, why: str = "") -> HeadEndStep:
        if self.phase is ConnectionPhase.CONNECTING:
            self._lose(now)
        return self._step(now)

    def connection_lost(self, now: float, why: str = "") -> HeadEndStep:
        if self.phase is not ConnectionPhase.IDLE:
            self._lose(now)
        return self._step(now)

    def on_bytes(self, data: bytes, now: float) -> HeadEndStep:
        if self.phase not in (ConnectionPhase.HANDSHAKING, ConnectionPhase.READY):
            return self._step(now)
        self._last_rx = now
        reader = self._reader
        reader.feed(data)
        while self._connected():
            try:
                frame = reader.next_frame()
            except FrameError as e:
                self.stats.frame_errors += 1
                self._send(HesError(code=e.code, detail=str(e)[:200], fatal=e.fatal), now)
                if e.fatal:
                    self._close_now(now)
                continue
            if frame is None:
                break
            if not self._proven and self.phase is ConnectionPhase.READY and not isinstance(frame, HesError):
                self._prove()
            if isinstance(frame, HesResults):
                self._on_results(frame.results, now)
            elif isinstance(frame, HesReads):
                self.stats.reads_received += len(frame.reads)
                self._reads.extend(frame.reads)
            elif isinstance(frame, HesBatchAccepted):
                self._on_accepted(frame, now)
            elif isinstance(frame, HesBatchRejected):
                wids = self._unacked.pop(frame.batch_id, None)
                if wids is not None:
                    self._on_rejected(wids, frame.reason, now)
            elif isinstance(frame, HesWelcome):
                self._on_welcome(frame, now)
            elif isinstance(frame, HesError):
                self._on_error(frame, now)
            # heartbeat echoes and anything else only prove the peer is alive
        return self._step(now)

    def _connected(self) -> bool:
        return self.phase is not ConnectionPhase.IDLE

    def on_tick(self, now: float) -> HeadEndStep:
        phase = self.phase
        if phase in (ConnectionPhase.CONNECTING, ConnectionPhase.HANDSHAKING):
            if now >= self._conn_deadline:
                self._close_now(now)
        elif phase is ConnectionPhase.READY:
            self._check_connection(now)
        if self.phase is ConnectionPhase.READY:
            self._expire_timeouts(now)
        self._release_waits(now)
        self._expire_queued(now)
        return self._step(now)

    # --- connection -------------------------------------------------------------------------

    def _maybe_connect(self, now: float) -> None:
        if self.phase is not ConnectionPhase.IDLE or now < self._reconnect_at:
            return
        allowed, self.breaker = breaker_allow(self.breaker, now)
        if allowed:
            self.phase = ConnectionPhase.CONNECTING
            self._conn_deadline = now + self.config.connect_timeout
            self._connect = True

    def _on_welcome(self, w: HesWelcome, now: float) -> None:
        if self.phase is not ConnectionPhase.HANDSHAKING:
            return
        cfg = self.config
        if w.version not in SUPPORTED_VERSIONS:
            self._close_now(now)
            return
        self.welcome = w
        self.phase = ConnectionPhase.READY
        self._proven = False  # a welcome alone is not health: a flapping head-end welcomes and drops
        self._max_batch = max(1, min(cfg.max_batch, w.max_batch, w.max_frame_bytes // _BYTES_PER_RECORD))
        self._reader.max_frame_bytes = max(self._reader.max_frame_bytes, w.max_frame_bytes)
        self._rate, self._read_rate = self._paced(w)
        rate, read_rate = self._rate, self._read_rate
        self._tokens = rate * cfg.rate_bucket_seconds
        self._read_tokens = read_rate * cfg.rate_bucket_seconds
        self._refilled_at = now
        self._hb_seq += 1
        self._send(HesHeartbeat(seq=self._hb_seq), now)  # its echo proves the connection at once

    def _paced(self, w: HesWelcome) -> tuple[float, float]:
        cfg = self.config
        mine = cfg.rate_limit * self._share if cfg.rate_limit else None
        return (_pace(mine, w.rate_limit * cfg.rate_headroom),
                _pace(cfg.read_rate_limit, w.read_rate_limit * cfg.rate_headroom))

    def set_rate_share(self, share: float) -> None:
        """Pace at `share` (0..1) of the configured rate limit: in a cluster every node talks to the
        same head-end, and the shares of all nodes add up to 1, so the limit holds cluster-wide."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"rate share must be within 0..1, not {share!r}")
        self._share = max(share, 1e-3)  # 0 would mean "unpaced"; a node with no group sends nothing
        if self.welcome is not None:
            self._rate, self._read_rate = self._paced(self.welcome)
            self._tokens = min(self._tokens, max(1.0, self._rate * self.config.rate_bucket_seconds))

    def _prove(self) -> None:
        """The peer answered on this connection: count a success (breaker, reconnect backoff)."""
        self._proven = True
        self.breaker = breaker_success(self.breaker)
        self._reconnect_failures = 0

    def _on_error(self, e: HesError, now: float) -> None:
        wids = self._unacked.pop(e.batch_id, None) if e.batch_id is not None else None
        if wids is not None:
            self._on_rejected(wids, HesRejectReason.MALFORMED, now)
        if e.fatal or e.code == HesErrorCode.UNSUPPORTED_VERSION:
            self._close_now(now)

    def _check_connection(self, now: float) -> None:
        cfg = self.config
        if now - self._last_rx >= cfg.idle_timeout:
            self._close_now(now)
            return
        acks = self._ack_deadlines
        while acks and acks[0][0] <= now:
            _, batch_id = acks.popleft()
            if batch_id in self._unacked:
                self._close_now(now)  # an unanswered submit: the connection is not working
                return
        if now - self._last_tx >= cfg.heartbeat_interval:
            self._hb_seq += 1
            self.stats.heartbeats += 1
            self._send(HesHeartbeat(seq=self._hb_seq), now)

    def _close_now(self, now: float) -> None:
        if self.phase is not ConnectionPhase.IDLE:
            self._close = True
            self._lose(now)

    def _lose(self, now: float) -> None:
        """The connection is gone: fail it in the breaker, plan a reconnect, re-verify what was out."""
        cfg = self.config
        self.stats.connection_losses += 1
        self.phase = ConnectionPhase.IDLE
        self.breaker = breaker_failure(self.breaker, cfg.breaker, now)
        if self.breaker.phase is BreakerPhase.CLOSED:
            delay = min(cfg.reconnect_max, cfg.reconnect_base * 2.0**self._reconnect_failures)
            self._reconnect_failures += 1
            self._reconnect_at = now + delay * (1.0 - cfg.jitter * self._rng.random())
        else:
            self._reconnect_failures = 0
            self._reconnect_at = now  # the open breaker's cooldown paces the attempts now
        for job in self._wire.values():
            if job.phase == _CMD_SENT:
                job.maybe_executed = True
                job.last_error = "connection_lost"
            if job.phase in (_CMD_SENT, _READ_SENT):
                self._enqueue(job, _READ)
        self._wire.clear()
        self._unacked.clear()
        self._ack_deadlines.clear()
        self._cmd_timeouts.clear()
        self._read_timeouts.clear()

    # --- queues and sending -----------------------------------------------------------------

    def _prune_expiring(self) -> None:
        """Forget ended jobs in the expiry index (they stay there until their expiry otherwise)."""
        live = {t: [j for j in js if j.phase != _DONE] for t, js in self._expiring.items()}
        self._expiring = {t: js for t, js in live.items() if js}
        self._expiry = list(self._expiring)
        heapq.heapify(self._expiry)
        self._expiring_count = sum(len(js) for js in self._expiring.values())

    def _enqueue(self, job: _Job, phase: int) -> None:
        job.phase = phase
        (self._read_q if phase == _READ else self._cmd_q).append(job)

    def _wait(self, job: _Job, delay: float, next_phase: int, now: float) -> None:
        job.token += 1
        job.phase = _WAIT
        job.next_phase = next_phase
        self._seq += 1
        heapq.heappush(self._waits, (now + delay, self._seq, job.token, job))

    def _backoff(self, n: int) -> float:
        cfg = self.config
        delay = min(cfg.retry_max, cfg.retry_base * cfg.retry_multiplier ** max(0, n - 1))
        return delay * (1.0 - cfg.jitter * self._rng.random())

    def _send(self, frame: HesSubmit | HesHello | HesHeartbeat | HesError, now: float) -> None:
        self._out.append(encode_frame(frame))
        self._last_tx = now
        self.stats.frames_sent += 1

    def _refill(self, now: float) -> None:
        dt = now - self._refilled_at
        if dt <= 0:
            return
        self._refilled_at = now
        bucket = self.config.rate_bucket_seconds
        if self._rate:
            self._tokens = min(max(1.0, self._rate * bucket), self._tokens + dt * self._rate)
        if self._read_rate:
            cap = max(1.0, self._read_rate * bucket)
            self._read_tokens = min(cap, self._read_tokens + dt * self._read_rate)

    def _pump(self, now: float) -> None:
        """Send what the queues, the in-flight window and the rate limits allow, in full frames."""
        if self.phase is not ConnectionPhase.READY or not (self._cmd_q or self._read_q):
            return
        queued = len(self._cmd_q) + len(self._read_q)
        if self._linger_until is not None and now < self._linger_until and queued < self._max_batch:
            return
        self._refill(now)
        while True:
            room = min(self._max_batch, self.config.max_in_flight - len(self._wire))
            if room <= 0:
                break
            records: list[HesCommand] = []
            read_ids = self._take_reads(room, records, now)
            cmd_ids = self._take_commands(room - len(records), records, now)
            if not records:
                break
            self._batch_id += 1
            self._send(HesSubmit(batch_id=self._batch_id, commands=tuple(records)), now)
            self._unacked[self._batch_id] = [r.command_id for r in records]
            self._ack_deadlines.append((now + self.config.ack_timeout, self._batch_id))
            if cmd_ids:
                self._cmd_timeouts.append((now + self.config.command_timeout, cmd_ids))
            if read_ids:
                self._read_timeouts.append((now + self.config.read_timeout, read_ids))
            if len(records) < room:
                break
        self._linger_until = None if not (self._cmd_q or self._read_q) else self._linger_until

    def _take_reads(self, room: int, records: list[HesCommand], now: float) -> list[str]:
        q, wire = self._read_q, self._wire
        ids: list[str] = []
        limited = self._read_rate > 0
        if limited:
            room = min(room, int(self._read_tokens))
        read_expiry = now + self.config.read_timeout
        new, append, add_id, popleft = tuple.__new__, records.append, ids.append, q.popleft
        n = 0
        while q and n < room:
            job = popleft()
            if job.phase != _READ:
                continue
            cmd = job.command
            if cmd.action is _A_READ:
                if now >= cmd.expires_at:
                    self._emit(job, OutcomeKind.EXPIRED, now)
                    continue
                expires_at = cmd.expires_at
            else:
                expires_at = read_expiry  # a read-back gets its own short expiry
            sends = job.sends = job.sends + 1
            wid = f"{cmd.command_id}/{sends}"
            job.phase = _READ_SENT
            wire[wid] = job
            append(new(HesCommand, (wid, cmd.meter, _A_READ, expires_at)))
            add_id(wid)
            n += 1
        if limited:
            self._read_tokens -= n
        self.stats.reads_sent += n
        return ids

    def _take_commands(self, room: int, records: list[HesCommand], now: float) -> list[str]:
        q, wire = self._cmd_q, self._wire
        ids: list[str] = []
        limited = self._rate > 0
        if limited:
            avail = int(self._tokens)
            chunk = min(len(q), max(1, int(self._rate * 0.02)))  # no dribble of 1-command frames
            room = min(room, avail) if avail >= chunk else 0
        new, append, add_id, popleft = tuple.__new__, records.append, ids.append, q.popleft
        n = 0
        while q and n < room:
            job = popleft()
            if job.phase != _CMD:
                continue
            cmd = job.command
            if now >= cmd.expires_at:
                self._end_unsent(job, now)
                continue
            sends = job.sends = job.sends + 1
            job.attempts += 1
            wid = f"{cmd.command_id}/{sends}"
            job.phase = _CMD_SENT
            wire[wid] = job
            append(new(HesCommand, (wid, cmd.meter, cmd.action, cmd.expires_at)))
            add_id(wid)
            n += 1
        if limited:
            self._tokens -= n
        self.stats.commands_sent += n
        return ids

    # --- results ----------------------------------------------------------------------------

    def _on_accepted(self, frame: HesBatchAccepted, now: float) -> None:
        wids = self._unacked.pop(frame.batch_id, None)
        if wids is None or not frame.rejected:
            return
        by_reason: dict[str, list[str]] = {}
        for r in frame.rejected:
            by_reason.setdefault(r.reason, []).append(r.command_id)
        for reason, ids in by_reason.items():
            self._on_rejected(ids, reason, now)

    def _on_rejected(self, wids: list[str], reason: str, now: float) -> None:
        for wid in wids:
            job = self._wire.pop(wid, None)
            if job is None:
                continue
            was_read = job.phase == _READ_SENT
            if reason == HesRejectReason.RATE_LIMITED:
                self.stats.rate_limited += 1
                if not was_read:
                    job.attempts -= 1  # it never reached the meter
                self._wait(job, self.config.rate_limited_delay, _READ if was_read else _CMD, now)
            elif reason == HesRejectReason.EXPIRED:
                if was_read and job.command.action is not _A_READ:
                    self._read_failed(job, now)
                else:
                    self._end_unsent(job, now)
            else:
                self._emit(job, OutcomeKind.REJECTED, now, reason=reason)

    def _on_results(self, results: tuple[HesCommandResult, ...], now: float) -> None:
        wire, stats, read_q = self._wire, self.stats, self._read_q
        stats.results += len(results)
        for r in results:
            job = wire.pop(r.command_id, None)
            if job is None:
                stats.stale_results += 1
                continue
            phase = job.phase
            if phase == _CMD_SENT:
                if r.status is _PROCESSED:  # the common case, inlined: queue the read-back
                    job.phase = _READ
                    read_q.append(job)
                else:
                    self._on_command_result(job, r, now)
            elif phase == _READ_SENT:
                self._on_read_result(job, r, now)

    def _on_command_result(self, job: _Job, r: HesCommandResult, now: float) -> None:
        if r.status is HesResultStatus.PROCESSED:
            self._enqueue(job, _READ)  # the head-end's word is not proof: read the relay back
        elif r.status is HesResultStatus.EXPIRED:
            self._end_unsent(job, now)
        else:
            code = r.error or "unknown"
            job.last_error = code
            if code in RETRYABLE_ERRORS:
                self._retry(job, now)
            else:
                self._conclude(job, _Final(OutcomeKind.FAILED, code, False), now)

    def _on_read_result(self, job: _Job, r: HesCommandResult, now: float) -> None:
        action = job.command.action
        if r.status is not HesResultStatus.PROCESSED:
            if action is _A_READ and r.status is HesResultStatus.EXPIRED:
                self._emit(job, OutcomeKind.EXPIRED, now)
            else:
                if r.error:
                    job.last_error = r.error
                self._read_failed(job, now)
            return
        kind = _classify(action, r)
        if kind is not None:
            self._emit(job, kind, now, result=r)
        elif action is _A_READ:
            self._emit(job, OutcomeKind.FAILED, now, result=r, error="inconsistent_state")
        elif job.held is not None:
            self._emit_held(job, now)
        elif job.maybe_executed:
            self.stats.unconfirmed += 1  # the send whose fate was unknown did not (yet) run: again
            self._retry(job, now)
        else:
            self.stats.mismatches += 1  # reported processed, but the relay says otherwise
            job.last_error = "readback_mismatch"
            self._retry(job, now)

    # --- endings ----------------------------------------------------------------------------

    def _retry(self, job: _Job, now: float) -> None:
        """Send the switching command again after a backoff, if attempts and time remain."""
        cmd = job.command
        if now >= cmd.expires_at:
            self._end_unsent(job, now)
        elif job.attempts >= self.config.max_attempts:
            retryable = job.last_error in _TRANSIENT
            self._conclude(job, _Final(OutcomeKind.FAILED, job.last_error, retryable), now)
        else:
            self.stats.retries += 1
            delay = min(self._backoff(job.attempts), max(0.0, cmd.expires_at - now))
            self._wait(job, delay, _CMD, now)

    def _read_failed(self, job: _Job, now: float) -> None:
        job.reads += 1
        if job.reads < self.config.max_reads:
            self._wait(job, self._backoff(job.reads), _READ, now)
        elif job.held is not None:
            self._emit_held(job, now)
        else:
            code = job.last_error
            retryable = code in _TRANSIENT
            self._emit(job, OutcomeKind.FAILED, now, error=code, retryable=retryable)

    def _end_unsent(self, job: _Job, now: float) -> None:
        """Its expiry passed before a send could run: expired, unless an earlier send may have run."""
        if job.command.action is _A_READ:
            self._emit(job, OutcomeKind.EXPIRED, now)
        else:
            self._conclude(job, _Final(OutcomeKind.EXPIRED), now)

    def _conclude(self, job: _Job, final: _Final, now: float) -> None:
        """End without success; if an earlier send may have run, read the relay first."""
        if job.maybe_executed:
            job.held = final
            job.maybe_executed = False
            self._enqueue(job, _READ)
        else:
            job.held = final
            self._emit_held(job, now)

    def _emit_held(self, job: _Job, now: float) -> None:
        f = job.held
        assert f is not None
        self._emit(job, f.kind, now, error=f.error, retryable=f.retryable, reason=f.reason)

    def _emit(
        self,
        job: _Job,
        kind: OutcomeKind,
        now: float,
        *,
        result: HesCommandResult | None = None,
        error: str | None = None,
        retryable: bool = False,
        reason: str | None = None,
    ) -> None:
        cmd = job.command
        job.phase = _DONE
        job.token += 1
        self._jobs.pop(cmd.command_id, None)
        if result is not None and error is None and result.control_state is not None:
            self._outcomes.append(
                relay_outcome(
                    cmd.command_id,
                    cmd.meter,
                    cmd.action,
                    kind,
                    now,
                    job.attempts,
                    result.control_state,
                    result.output_state,
                    result.control_mode,
                )
            )
            return
        self._outcomes.append(
            HeadEndOutcome(
                command_id=cmd.command_id,
                meter=cmd.meter,
                action=cmd.action,
                kind=kind,
                at=now,
                attempts=job.attempts,
                error=error,
                retryable=retryable,
                reason=reason,
                control_state=None if result is None else result.control_state,
                output_state=None if result is None else result.output_state,
                control_mode=None if result is None else result.control_mode,
            )
        )

    # --- time -------------------------------------------------------------------------------

    def _expire_timeouts(self, now: float) -> None:
        wire = self._wire
        for q, phase in ((self._cmd_timeouts, _CMD_SENT), (self._read_timeouts, _READ_SENT)):
            while q and q[0][0] <= now:
                _, wids = q.popleft()
                for wid in wids:
                    job = wire.get(wid)
                    if job is None or job.phase != phase:
                        continue
                    del wire[wid]
                    self.stats.timeouts += 1
                    job.last_error = "timeout"
                    if phase == _CMD_SENT:
                        job.maybe_executed = True
                        self._enqueue(job, _READ)
                    else:
                        self._read_failed(job, now)

    def _release_waits(self, now: float) -> None:
        waits = self._waits
        while waits and waits[0][0] <= now:
            _, _, token, job = heapq.heappop(waits)
            if job.token == token and job.phase == _WAIT:
                self._enqueue(job, job.next_phase)

    def _expire_queued(self, now: float) -> None:
        """Commands waiting (queued or backing off) past their expiry end now, not when next sent."""
        heap = self._expiry
        while heap and heap[0] <= now:
            jobs = self._expiring.pop(heapq.heappop(heap), [])
            self._expiring_count -= len(jobs)
            for job in jobs:
                self._expire_if_waiting(job, now)

    def _expire_if_waiting(self, job: _Job, now: float) -> None:
        phase = job.phase
        waiting_cmd = phase == _CMD or (phase == _WAIT and job.next_phase == _CMD)
        waiting_read = job.command.action is _A_READ and (
            phase == _READ or (phase == _WAIT and job.next_phase == _READ)
        )
        if waiting_cmd or waiting_read:
            self._end_unsent(job, now)

    def _wake_at(self, now: float) -> float | None:
        t: list[float] = []
        phase = self.phase
        if phase is ConnectionPhase.IDLE:
            retry = breaker_retry_at(self.breaker)
            t.append(max(self._reconnect_at, retry if retry is not None else self._reconnect_at))
        elif phase is not ConnectionPhase.READY:
            t.append(self._conn_deadline)
        else:
            cfg = self.config
            t.append(self._last_rx + cfg.idle_timeout)
            t.append(self._last_tx + cfg.heartbeat_interval)
            for q in (self._ack_deadlines, self._cmd_timeouts, self._read_timeouts):
                if q:
                    t.append(q[0][0])
            if (self._cmd_q or self._read_q) and len(self._wire) < cfg.max_in_flight:
                if self._linger_until is not None and now < self._linger_until:
                    t.append(self._linger_until)
                else:
                    t.append(now + self._token_wait())
        if self._waits:
            t.append(self._waits[0][0])
        if self._expiry:
            t.append(self._expiry[0])
        return min(t) if t else None

    def _token_wait(self) -> float:
        """Seconds until the rate limits let the next frame out (0 if they do now)."""
        waits = []
        if self._cmd_q:
            rate = self._rate
            need = min(len(self._cmd_q), max(1, int(rate * 0.02)))
            waits.append(max(0.0, (need - self._tokens) / rate) if rate else 0.0)
        if self._read_q:
            rate = self._read_rate
            waits.append(max(0.0, (1.0 - self._read_tokens) / rate) if rate else 0.0)
        return min(waits) if waits else 0.0

    def _step(self, now: float) -> HeadEndStep:
        self._maybe_connect(now)
        self._pump(now)
        step = HeadEndStep(
            send=b"".join(self._out),
            outcomes=tuple(self._outcomes),
            connect=self._connect,
            close=self._close,
            wake_at=self._wake_at(now),
        )
        self._out.clear()
        self._outcomes.clear()
        self._connect = self._close = False
        return step
