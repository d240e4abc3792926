"""The simulated head-end, sans I/O: frames in, frames out, time passed in.

`SimCore` owns the fleet, the sessions (one per connection), the schedule of commands still to run and
of results still to deliver, and the outage calendar. The asyncio server (`headend.sim.server`) only
moves bytes and calls `handle`/`on_tick`, so every behaviour here is testable without sockets.

Each command's fate (latency, failure and its code, lie, drop, duplicate, reorder delay) comes from
a hash of (seed, command_id): the same command id meets the same fate whatever the arrival order or
timing, and a retry under a new id draws a new one.

Semantics worth knowing:
- A command whose `expires_at` has passed at submission is rejected ``expired``; one whose execution
  time (arrival + latency, no earlier than the end of a warm-up) is at or after `expires_at` is never
  executed and reported with status EXPIRED.
- Failures: ``no_communication`` (retryable), ``relay_stuck`` and ``load_side_voltage_present`` (not;
  the latter only on connect, otherwise it becomes no_communication); a failed command changes nothing.
  A mode-0 meter refuses a disconnect with ``not_permitted``.
- A lie (`misreport_rate`) reports PROCESSED with the intended state but changes nothing: only a read
  back shows it. Reads are never lied about and fail only with no_communication.
- Rate limits are per session, token buckets holding `rate_burst` seconds of rate: `rate_limit` for
  connect/disconnect, `read_rate_limit` for reads; commands above them are rejected ``rate_limited``.
- Daily reads (`SimConfig.daily_reads`): when an IST day ends on the simulator's clock (``wall``) or
  a lab clock is moved past midnight (``lab``, `lab_clock`), every meter's read of that day goes out
  in `HesReads` frames to one session (the oldest that said hello; held while none has), a few frames
  per tick. A client that cannot read them answers unknown_frame, which is counted and ignored.
- During an outage the server refuses or closes connections; commands already accepted still execute
  (the radio network has them) but results for a closed session are lost. After an outage and at
  start, `slow_start` seconds of warm-up: commands are accepted but none executes before it ends.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import accumulate

from headend.sim.config import DailyReadsMode, SimConfig
from headend.sim.fleet import Fleet, remote_transition
from headend.sim.reads import DailyReads
from protocols.errors import FrameError
from protocols.headend import (
    HesAction,
    HesBatchAccepted,
    HesBatchRejected,
    HesCommand,
    HesCommandResult,
    HesControlState,
    HesError,
    HesErrorCode,
    HesFrame,
    HesHeartbeat,
    HesHello,
    HesInspect,
    HesInspection,
    HesMeterState,
    HesPressButton,
    HesRejection,
    HesRejectReason,
    HesResults,
    HesResultStatus,
    HesSubmit,
    HesWelcome,
    choose_version,
)

__all__ = ["SimCore", "SimStats", "SimTick"]

_CONTROL = (
    HesControlState.DISCONNECTED,
    HesControlState.CONNECTED,
    HesControlState.READY_FOR_RECONNECTION,
)
_TARGET = {HesAction.CONNECT: 1, HesAction.DISCONNECT: 0}
_READ = HesAction.READ
_PROCESSED, _ERROR = HesResultStatus.PROCESSED, HesResultStatus.ERROR
_FATE = struct.Struct("<10I")
_SCALE = 1.0 / 2**32


@dataclass(slots=True)
class SimStats:
    """Counters since start; read them from the simulator's own thread (or via its API)."""

    connections: int = 0
    frames_in: int = 0
    frame_errors: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    executed: int = 0  # switching commands that ran (changed the relay or found it already there)
    reads: int = 0
    expired: int = 0  # accepted, never executed, reported EXPIRED
    failed: int = 0
    misreported: int = 0
    dropped: int = 0
    duplicated: int = 0
    deduplicated: int = 0  # switching commands received again by id: answered, not executed again
    lost_to_closed_sessions: int = 0
    reads_sent: int = 0  # consumption reads sent in HesReads frames


@dataclass(frozen=True, slots=True)
class _Fate:
    latency: float
    error: str | None
    lie: bool
    drop: bool
    duplicate_after: float | None
    reorder_delay: float


_RAN_KEPT = 1_000_000  # switching commands remembered for deduplication

_CLEAN = _Fate(0.0, None, False, False, None, 0.0)


@dataclass(slots=True)
class _Session:
    hello: bool = False
    tokens: float = 0.0
    read_tokens: float = 0.0
    refilled_at: float = 0.0


@dataclass(slots=True)
class SimTick:
    """What `on_tick` wants done: frames per session, and outage transitions to act on."""

    frames: dict[int, list[HesFrame]]
    outage_started: bool = False
    outage_ended: bool = False


class SimCore:
    def __init__(self, config: SimConfig, now: float, fleet: Fleet | None = None) -> None:
        self.config = config
        self.fleet = fleet or Fleet(
            config.meters,
            prefix=config.serial_prefix,
            width=config.serial_width,
            modes=config.modes,
            disconnected_fraction=config.disconnected_fraction,
            seed=config.seed,
        )
        self.stats = SimStats()
        self.started_at = now
        self.warm_until = now + config.slow_start
        self._sessions: dict[int, _Session] = {}
        self._next_sid = 1
        self._runs: list[tuple[float, int, int, int, HesCommand, _Fate]] = []  # t, seq, sid, index
        self._deliveries: list[tuple[float, int, int, HesCommandResult]] = []  # t, seq, sid
        self._seq = 0
        self._outbox: dict[int, list[HesCommandResult]] = defaultdict(list)
        # Idempotent receiver (IEC 61968-9 MessageID practice): a switching command that already ran
        # is answered with its recorded result when its id comes again (a gateway that restarted
        # re-sends what it had in flight), instead of running on the meter a second time.
        self._ran: dict[str, HesCommandResult] = {}
        self._windows = sorted((now + s, now + s + d) for s, d in config.outages)
        self._manual_outage_until: float | None = None
        self._in_outage = False
        self._seed = str(config.seed).encode() + b":"
        codes = [c for c, _ in config.failure_mix]
        self._codes = codes
        self._code_cdf = list(accumulate(w for _, w in config.failure_mix))
        seed = config.seed if config.load_seed is None else config.load_seed
        self.daily = DailyReads(self.fleet, seed, config.max_batch)
        if config.daily_reads is DailyReadsMode.WALL:
            self.daily.start(now)

    # --- sessions ---------------------------------------------------------------------------

    def open_session(self, now: float) -> int:
        sid = self._next_sid
        self._next_sid += 1
        cfg = self.config
        self._sessions[sid] = _Session(
            tokens=cfg.rate_limit * cfg.rate_burst,
            read_tokens=cfg.read_rate_limit * cfg.rate_burst,
            refilled_at=now,
        )
        self.stats.connections += 1
        return sid

    def close_session(self, sid: int) -> None:
        self._sessions.pop(sid, None)
        lost = self._outbox.pop(sid, None)
        if lost:
            self.stats.lost_to_closed_sessions += len(lost)

    @property
    def session_ids(self) -> list[int]:
        return list(self._sessions)

    # --- outages ----------------------------------------------------------------------------

    def outage_active(self, now: float) -> bool:
        if self._manual_outage_until is not None and now < self._manual_outage_until:
            return True
        return any(start <= now < end for start, end in self._windows)

    def begin_outage(self, now: float, seconds: float | None = None) -> None:
        """Start an outage now, for `seconds` (None: until `end_outage`)."""
        self._manual_outage_until = float("inf") if seconds is None else now + seconds

    def end_outage(self, now: float) -> None:
        self._manual_outage_until = None
        self._windows = [(s, min(e, now)) for s, e in self._windows if s < now]

    def _next_outage_edge(self, now: float) -> float | None:
        edges = [t for w in self._windows for t in w if t > now]
        m = self._manual_outage_until
        if m is not None and now < m < float("inf"):
            edges.append(m)
        return min(edges) if edges else None

    # --- frames -----------------------------------------------------------------------------

    def lab_clock(self, was: float, now: float) -> int:
        """A lab clock moved from ``was`` to ``now`` (``daily_reads = lab``): queue the reads of every
        IST day that ended in between; returns the days queued (0 in another mode)."""
        if self.config.daily_reads is not DailyReadsMode.LAB:
            return 0
        self.daily.start(was)
        return self.daily.report_until(now)

    def _reads_session(self) -> int | None:
        """Where reads go: the oldest session that said hello (one, not all: one copy per day)."""
        return next((sid for sid, s in self._sessions.items() if s.hello), None)

    def frame_error(self, sid: int, error: FrameError) -> HesError:
        """The error frame answering an undecodable frame; the server closes after it if fatal."""
        self.stats.frame_errors += 1
        return HesError(code=error.code, detail=str(error), batch_id=error.batch_id, fatal=error.fatal)

    def handle(self, sid: int, frame: HesFrame, now: float) -> list[HesFrame]:
        """Frames answering `frame` now, then any results that became due (flush with `take_results`)."""
        self.stats.frames_in += 1
        session = self._sessions.get(sid)
        if session is None:
            return []
        if isinstance(frame, HesSubmit):
            if not session.hello:
                return [HesError(code=HesErrorCode.HELLO_REQUIRED, batch_id=frame.batch_id)]
            return [self._submit(sid, session, frame, now)]
        if isinstance(frame, HesHeartbeat):
            return [frame]
        if isinstance(frame, HesHello):
            return [self._hello(session, frame)]
        if isinstance(frame, HesInspect):
            return [HesInspection(query_id=frame.query_id, states=self._states(frame.meters))]
        if isinstance(frame, HesPressButton):
            for meter in frame.meters:
                if self.fleet.index(meter) is not None:
                    self.fleet.press_button(meter)
            return [HesInspection(query_id=frame.query_id, states=self._states(frame.meters))]
        if isinstance(frame, HesError):
            return []  # e.g. an older client's unknown_frame answer to HesReads: counted, nothing to say
        return [HesError(code=HesErrorCode.UNSUPPORTED, detail=f"{type(frame).__name__} is not a request")]

    def _states(self, meters: tuple[str, ...]) -> tuple[HesMeterState, ...]:
        return tuple(self.fleet.state(m) for m in meters)

    def _hello(self, session: _Session, frame: HesHello) -> HesFrame:
        version = choose_version(frame.versions)
        if version is None:
            return HesError(
                code=HesErrorCode.UNSUPPORTED_VERSION,
                detail=f"offered {list(frame.versions)}, speaks [1]",
                fatal=True,
            )
        session.hello = True
        cfg = self.config
        return HesWelcome(
            version=version,
            server=cfg.server_name,
            max_frame_bytes=cfg.max_frame_bytes,
            max_batch=cfg.max_batch,
            rate_limit=cfg.rate_limit,
            read_rate_limit=cfg.read_rate_limit,
        )

    def _refill(self, s: _Session, now: float) -> None:
        cfg = self.config
        dt = max(0.0, now - s.refilled_at)
        s.refilled_at = now
        if cfg.rate_limit:
            s.tokens = min(cfg.rate_limit * cfg.rate_burst, s.tokens + dt * cfg.rate_limit)
        if cfg.read_rate_limit:
            cap = cfg.read_rate_limit * cfg.rate_burst
            s.read_tokens = min(cap, s.read_tokens + dt * cfg.read_rate_limit)

    def _submit(self, sid: int, s: _Session, frame: HesSubmit, now: float) -> HesFrame:
        cfg = self.config
        if len(frame.commands) > cfg.max_batch:
            self.stats.rejected[HesRejectReason.MALFORMED] += len(frame.commands)
            return HesBatchRejected(
                batch_id=frame.batch_id,
                reason=HesRejectReason.MALFORMED,
                detail=f"{len(frame.commands)} commands; max_batch is {cfg.max_batch}",
            )
        self._refill(s, now)
        rejected: list[HesRejection] = []
        reject = rejected.append
        fleet = self.fleet
        index, states, modes = fleet.index, fleet.control_state, fleet.control_mode
        limit, read_limit = cfg.rate_limit, cfg.read_rate_limit
        quiet = cfg.quiet and now >= self.warm_until
        results = self._outbox[sid]
        done, new = results.append, tuple.__new__
        executed = reads = failed = 0
        for cmd in frame.commands:
            cid, meter, action, expires_at, _ = cmd  # (credit_paise: never on this wire)
            i = index(meter)
            if i is None:
                reject(HesRejection(cid, HesRejectReason.UNKNOWN_METER))
                continue
            if action is not _READ and cid in self._ran:
                done(self._ran[cid]._replace(at=now))
                self.stats.deduplicated += 1
                continue
            if expires_at <= now:
                reject(HesRejection(cid, HesRejectReason.EXPIRED))
                continue
            if action is _READ:
                if read_limit:
                    if s.read_tokens < 1.0:
                        reject(HesRejection(cid, HesRejectReason.RATE_LIMITED))
                        continue
                    s.read_tokens -= 1.0
            elif limit:
                if s.tokens < 1.0:
                    reject(HesRejection(cid, HesRejectReason.RATE_LIMITED))
                    continue
                s.tokens -= 1.0
            if not quiet:
                self._accept_later(sid, i, cmd, now)
                continue
            # no faults configured: run it now (the same as _execute with a clean fate, inlined)
            mode = modes[i]
            if action is _READ:
                cs, error = states[i], None
                reads += 1
            else:
                cs, error = remote_transition(states[i], mode, action)
                if error is None:
                    states[i] = cs
                    executed += 1
                else:
                    failed += 1
            status = _PROCESSED if error is None else _ERROR
            result = new(HesCommandResult, (cid, meter, status, _CONTROL[cs], cs == 1, mode, error, now))
            done(result)
            if action is not _READ and error is None:
                self._remember(cid, result)
        stats = self.stats
        stats.executed += executed
        stats.reads += reads
        stats.failed += failed
        stats.accepted += len(frame.commands) - len(rejected)
        for r in rejected:
            stats.rejected[r.reason] += 1
        if rejected and len(rejected) == len(frame.commands):
            reasons = {r.reason for r in rejected}
            if len(reasons) == 1:
                return HesBatchRejected(batch_id=frame.batch_id, reason=reasons.pop())
        return HesBatchAccepted(batch_id=frame.batch_id, rejected=tuple(rejected))

    # --- fate and execution -----------------------------------------------------------------

    def _fate(self, cmd: HesCommand) -> _Fate:
        cfg = self.config
        if cfg.quiet:
            return _CLEAN
        digest = hashlib.blake2b(self._seed + cmd.command_id.encode(), digest_size=40).digest()
        u = [x * _SCALE for x in _FATE.unpack(digest)]
        error: str | None = None
        if u[1] < cfg.failure_rate:
            error = self._pick_code(u[2], cmd.action)
        lie = error is None and cmd.action is not HesAction.READ and u[3] < cfg.misreport_rate
        dup = u[5] * cfg.reorder_window + 0.001 if u[4] < cfg.duplicate_rate else None
        reorder = u[7] * cfg.reorder_window if u[6] < cfg.reorder_rate else 0.0
        drop = u[8] < cfg.drop_rate
        return _Fate(cfg.latency.sample(u[0]), error, lie, drop, dup, reorder)

    def _pick_code(self, u: float, action: HesAction) -> str:
        target = u * self._code_cdf[-1]
        code = self._codes[-1]
        for c, edge in zip(self._codes, self._code_cdf, strict=True):
            if target < edge:
                code = c
                break
        if action is HesAction.READ:
            return HesErrorCode.NO_COMMUNICATION  # a read cannot find a relay stuck or a backfeed
        if code == HesErrorCode.LOAD_SIDE_VOLTAGE_PRESENT and action is not HesAction.CONNECT:
            return HesErrorCode.NO_COMMUNICATION  # backfeed only matters when closing
        return code

    def _accept_later(self, sid: int, index: int, cmd: HesCommand, now: float) -> None:
        fate = self._fate(cmd)
        t_exec = max(now + fate.latency, self.warm_until)
        self._seq += 1
        heapq.heappush(self._runs, (t_exec, self._seq, sid, index, cmd, fate))

    def _execute(self, index: int, cmd: HesCommand, fate: _Fate, t: float) -> HesCommandResult:
        """Run one command at time t (expiry already checked) and build its result."""
        fleet = self.fleet
        mode = fleet.control_mode[index]
        if fate.error is not None:
            self.stats.failed += 1
            cs = fleet.control_state[index]
            return HesCommandResult(
                cmd.command_id, cmd.meter, HesResultStatus.ERROR, _CONTROL[cs], cs == 1, mode, fate.error, t
            )
        if cmd.action is HesAction.READ:
            self.stats.reads += 1
            cs = fleet.control_state[index]
        elif fate.lie:
            self.stats.misreported += 1
            cs = _TARGET[cmd.action] if mode != 0 else fleet.control_state[index]
        else:
            cs, error = fleet.apply(index, cmd.action)
            if error is not None:
                self.stats.failed += 1
                return HesCommandResult(
                    cmd.command_id, cmd.meter, HesResultStatus.ERROR, _CONTROL[cs], cs == 1, mode, error, t
                )
            self.stats.executed += 1
        result = HesCommandResult(
            cmd.command_id, cmd.meter, HesResultStatus.PROCESSED, _CONTROL[cs], cs == 1, mode, None, t
        )
        if cmd.action is not HesAction.READ:
            self._remember(cmd.command_id, result)
        return result

    def _remember(self, command_id: str, result: HesCommandResult) -> None:
        ran = self._ran
        ran[command_id] = result
        if len(ran) > _RAN_KEPT:
            del ran[next(iter(ran))]  # the oldest: ids are re-sent within minutes, not days

    def _run(self, t: float, sid: int, index: int, cmd: HesCommand, fate: _Fate) -> None:
        if t >= cmd.expires_at:
            self.stats.expired += 1
            result = HesCommandResult(
                cmd.command_id, cmd.meter, HesResultStatus.EXPIRED, None, None, None, None, t
            )
        else:
            result = self._execute(index, cmd, fate, t)
        if fate.drop:
            self.stats.dropped += 1
            return
        if fate.reorder_delay == 0.0:
            self._outbox[sid].append(result)
        else:
            self._deliver_at(t + fate.reorder_delay, sid, result)
        if fate.duplicate_after is not None:
            self.stats.duplicated += 1
            self._deliver_at(t + fate.reorder_delay + fate.duplicate_after, sid, result)

    def _deliver_at(self, t: float, sid: int, result: HesCommandResult) -> None:
        self._seq += 1
        heapq.heappush(self._deliveries, (t, self._seq, sid, result))

    # --- time -------------------------------------------------------------------------------

    def on_tick(self, now: float) -> SimTick:
        """Run what is due by `now`; returns result frames per session and outage transitions."""
        tick = SimTick(frames={})
        active = self.outage_active(now)
        if active != self._in_outage:
            self._in_outage = active
            if active:
                tick.outage_started = True
            else:
                tick.outage_ended = True
                self.warm_until = max(self.warm_until, now + self.config.slow_start)
                self._reschedule_for_warmup()
        runs, deliveries = self._runs, self._deliveries
        while runs and runs[0][0] <= now:
            t, _, sid, index, cmd, fate = heapq.heappop(runs)
            self._run(t, sid, index, cmd, fate)
        while deliveries and deliveries[0][0] <= now:
            _, _, sid, result = heapq.heappop(deliveries)
            self._outbox[sid].append(result)
        if self.config.daily_reads is DailyReadsMode.WALL:
            self.daily.report_until(now)
        tick.frames = self.take_results()
        self._add_reads(tick.frames)
        return tick

    def _add_reads(self, frames: dict[int, list[HesFrame]], max_frames: int = 2) -> None:
        """A few frames of queued daily reads for the reads session (the rest on the next ticks)."""
        if not self.daily.pending:
            return
        sid = self._reads_session()
        if sid is None:
            return
        reads = self.daily.frames(max_frames)
        self.stats.reads_sent += sum(len(f.reads) for f in reads)
        frames.setdefault(sid, []).extend(reads)

    def _reschedule_for_warmup(self) -> None:
        """Executions due before the new warm-up ends wait for it."""
        w = self.warm_until
        if self._runs and self._runs[0][0] < w:
            self._runs = [(max(t, w), *rest) for t, *rest in self._runs]  # type: ignore[misc]
            heapq.heapify(self._runs)

    def take_results(self) -> dict[int, list[HesFrame]]:
        """Results waiting to go out, as HesResults frames of at most max_batch each, per session."""
        out: dict[int, list[HesFrame]] = {}
        if not self._outbox:
            return out
        size = self.config.max_batch
        for sid, results in self._outbox.items():
            if sid not in self._sessions:
                self.stats.lost_to_closed_sessions += len(results)
                continue
            if results:
                out[sid] = [
                    HesResults(results=tuple(results[k : k + size])) for k in range(0, len(results), size)
                ]
        self._outbox.clear()
        return out

    def next_due(self, now: float) -> float | None:
        """When `on_tick` has work next (scheduled commands, results, an outage edge)."""
        times = [h[0][0] for h in (self._runs, self._deliveries) if h]
        if self.daily.pending and self._reads_session() is not None:
            times.append(now)
        edge = self._next_outage_edge(now)
        if edge is not None:
            times.append(edge)
        return min(times) if times else None
