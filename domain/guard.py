"""The mass-disconnect guard's rules, pure: waves, thresholds, approvals, the kill switch.

A wrong bill run or tariff bug could cut a whole city at once; the guard makes automatic
disconnections leave each head-end in staggered **waves** (at most ``wave_size`` every
``wave_spacing_s``) and **holds** a wave that would take the last hour's disconnections past a
threshold (per head-end, or over every head-end of this node) until ``approvals_required`` distinct
people approve it. `research/domain.md` §2 and the RDSS notes (§"Disconnection policy engine",
§"Security") ask for staggered batch disconnection and "a human approval gate for mass
disconnections"; the numbers below are ours, not sourced.

**Reconnections are never held or throttled**: `admit` sends every command that is not an
automatic disconnect at once, whatever the state (paused, a wave held, thresholds crossed). An
engineer's disconnection is a deliberate single act and passes too.

One `GuardState` per head-end. A disconnect arriving is either sent now (room in the current step,
nothing waiting before it, thresholds kept) or kept: in the queue, or in the held wave if there is
one (a held wave takes in every disconnect that queues behind it until it is approved, so one
approval covers one incident). `tick` cuts the queue into waves, releases approved waves step by
step and forgets what the hour window no longer counts. Kept disconnects leave by `Actions.released`
(the meter then issues a fresh command, which `admit` lets through as ``cleared``).

Nothing here reads a clock: ``now`` is a parameter (the gateway's wall clock, seconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from domain.enums import CommandOrigin, RelayAction
from domain.errors import DomainError

__all__ = [
    "QUEUED",
    "Actions",
    "ApprovalKind",
    "ApprovalOutcome",
    "GuardPolicy",
    "GuardPolicyError",
    "GuardState",
    "Incoming",
    "Kept",
    "Wave",
    "WaveStatus",
    "admit",
    "approval",
    "cancel",
    "guarded",
    "recent_count",
    "tick",
]

QUEUED = "queued"  # the "wave" a kept disconnect is in before any wave is cut for it


class GuardPolicyError(DomainError, ValueError):
    """A guard setting is out of range; the message names it. Refuse to start with it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardPolicy:
    """The guard's settings (``[disconnects]`` in the node config). Every default is ours."""

    enabled: bool = True
    wave_size: int = 500  # automatic disconnects leaving one head-end per step
    wave_spacing_s: float = 60.0  # seconds between steps at one head-end
    max_per_hour: int = 2000  # per head-end: a wave taking the last hour past this is held
    max_per_hour_total: int = 5000  # over every head-end of this node (cluster: per node)
    approvals_required: int = 1  # 1 or 2 distinct approvers
    window_s: float = 3600.0  # the "hour" of the thresholds
    cleared_ttl_s: float = 600.0  # a released meter's fresh command passes within this

    def __post_init__(self) -> None:
        checks = (
            (self.wave_size >= 1, "wave_size", "must be >= 1"),
            (self.wave_spacing_s >= 0, "wave_spacing_s", "must not be negative"),
            (self.max_per_hour >= 1, "max_per_hour", "must be >= 1"),
            (self.max_per_hour_total >= 1, "max_per_hour_total", "must be >= 1"),
            (self.approvals_required in (1, 2), "approvals_required", "must be 1 or 2"),
            (self.window_s > 0, "window_s", "must be > 0"),
            (self.cleared_ttl_s > 0, "cleared_ttl_s", "must be > 0"),
        )
        for ok, key, why in checks:
            if not ok:
                raise GuardPolicyError(f"disconnects.{key} {why}, got {getattr(self, key)!r}")


class WaveStatus(StrEnum):
    HELD = "held"  # waits for approval
    APPROVED = "approved"  # approved, leaving step by step
    RELEASED = "released"  # every member has left (or was cancelled)


@dataclass(frozen=True, slots=True)
class Kept:
    """A disconnect the guard keeps: the meter, its command, the shard group to answer."""

    account: str
    command_id: str
    group: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """A relay command offered to the guard."""

    account: str
    command_id: str
    group: int
    action: RelayAction
    origin: CommandOrigin


@dataclass(frozen=True, slots=True, kw_only=True)
class Wave:
    wave_id: str
    head_end: str
    status: WaveStatus
    opened_at: float
    reason: str
    members: tuple[Kept, ...] = ()  # still to leave
    size: int = 0  # members it ever had (cancelled ones included)
    left: int = 0  # members released so far
    cancelled: int = 0
    approvers: tuple[str, ...] = ()
    closed_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardState:
    head_end: str
    queue: tuple[Kept, ...] = ()
    wave: Wave | None = None  # the open (held or approved) wave; at most one per head-end
    recent: tuple[tuple[float, int], ...] = ()  # (when, how many) left this head-end in the window
    step_at: float = -math.inf
    step_used: int = 0
    step_wave: str | None = None  # the released wave that the current step's sends belong to
    step_sent: int = 0  # sent or released in step_wave so far
    cleared: dict[str, float] = field(default_factory=dict)  # account → until (read-only by convention)
    paused: bool = False
    next_seq: int = 1


@dataclass(slots=True)
class Actions:
    """What the caller must do after a guard step."""

    send: list[int] = field(default_factory=list)  # indexes into admit()'s items: submit now
    kept: list[tuple[Kept, str]] = field(default_factory=list)  # tell the meter: held (wave id or QUEUED)
    released: list[Kept] = field(default_factory=list)  # tell the meter: released, issue it afresh
    waves: list[Wave] = field(default_factory=list)  # waves opened or changed (to store)
    counted: int = 0  # disconnects that left this head-end in this step (for the node-wide total)


def guarded(action: RelayAction, origin: CommandOrigin) -> bool:
    """Does the guard pace this command? Only automatic disconnections."""
    return action is RelayAction.DISCONNECT and origin is CommandOrigin.AUTOMATIC


def recent_count(state: GuardState, now: float, policy: GuardPolicy) -> int:
    since = now - policy.window_s
    return sum(n for at, n in state.recent if at > since)


def _step(state: GuardState, now: float, policy: GuardPolicy) -> GuardState:
    if now - state.step_at >= policy.wave_spacing_s:
        return replace(state, step_at=now, step_used=0, step_wave=None, step_sent=0)
    return state


def _over(state: GuardState, n: int, now: float, total: int, policy: GuardPolicy) -> str | None:
    """Why sending ``n`` more now would cross a threshold, or None."""
    here = recent_count(state, now, policy)
    if here + n > policy.max_per_hour:
        return (f"{here + n} disconnections in {policy.window_s:g} s at {state.head_end} would pass "
                f"max_per_hour {policy.max_per_hour}")
    if total + n > policy.max_per_hour_total:
        return (f"{total + n} disconnections in {policy.window_s:g} s on this node would pass "
                f"max_per_hour_total {policy.max_per_hour_total}")
    return None


def _new_wave(state: GuardState, now: float, status: WaveStatus, reason: str) -> tuple[GuardState, Wave]:
    wave = Wave(wave_id=f"{state.head_end}.{state.next_seq}", head_end=state.head_end, status=status,
                opened_at=now, reason=reason)
    return replace(state, next_seq=state.next_seq + 1), wave


def admit(
    state: GuardState, items: Sequence[Incoming], now: float, total: int, policy: GuardPolicy
) -> tuple[GuardState, Actions]:
    """Offer commands to the guard. ``total``: disconnections that left every head-end of the node
    in the window (this one included). Every item is either in ``send`` or in ``kept``."""
    out = Actions()
    s = _step(state, now, policy)
    in_wave = {k.account: i for i, k in enumerate(s.wave.members)} if s.wave is not None else {}
    in_queue = {k.account: i for i, k in enumerate(s.queue)}
    wave_members = list(s.wave.members) if s.wave is not None else []
    queue = list(s.queue)
    joined = 0
    sent = 0
    step_wave, step_sent = s.step_wave, s.step_sent
    next_seq = s.next_seq
    for index, item in enumerate(items):
        if not policy.enabled or not guarded(item.action, item.origin):
            out.send.append(index)
            continue
        kept = Kept(item.account, item.command_id, item.group)
        if s.cleared.get(item.account, -math.inf) > now:
            out.send.append(index)  # released from a wave: its fresh command, already counted
            continue
        if item.account in in_wave:
            wave_members[in_wave[item.account]] = kept  # re-sent, or issued afresh: same place
            out.kept.append((kept, s.wave.wave_id if s.wave is not None else QUEUED))
            continue
        if item.account in in_queue:
            queue[in_queue[item.account]] = kept
            out.kept.append((kept, QUEUED))
            continue
        if s.wave is not None and s.wave.status is WaveStatus.HELD:
            in_wave[item.account] = len(wave_members)
            wave_members.append(kept)
            joined += 1
            out.kept.append((kept, s.wave.wave_id))
            continue
        room = s.step_used + sent < policy.wave_size
        if (s.paused or s.wave is not None or queue or not room
                or _over(s, sent + 1, now, total, policy) is not None):
            in_queue[item.account] = len(queue)
            queue.append(kept)
            out.kept.append((kept, QUEUED))
            continue
        out.send.append(index)
        sent += 1
    if sent and step_wave is None:
        step_wave, step_sent = f"{s.head_end}.{next_seq}", 0
        next_seq += 1
    wave = s.wave
    if wave is not None and (joined or wave_members != list(wave.members)):
        wave = replace(wave, members=tuple(wave_members), size=wave.size + joined)
        out.waves.append(wave)
    recent = (*s.recent, (now, sent)) if sent else s.recent
    s = replace(s, queue=tuple(queue), wave=wave, recent=recent, step_used=s.step_used + sent,
                step_wave=step_wave, step_sent=step_sent + sent, next_seq=next_seq)
    if sent:
        total_sent = step_sent + sent
        out.waves.append(Wave(wave_id=step_wave or "", head_end=s.head_end, status=WaveStatus.RELEASED,
                              opened_at=now, reason="within the thresholds", size=total_sent,
                              left=total_sent, closed_at=now))
    out.counted = sent
    return s, out


def tick(
    state: GuardState,
    now: float,
    total: int,
    policy: GuardPolicy,
    *,
    paused: bool,
    approvers: Iterable[str] = (),
) -> tuple[GuardState, Actions]:
    """One guard tick: follow the kill switch, take approvals of the open wave, release a step."""
    out = Actions()
    since = now - policy.window_s
    cleared = {a: t for a, t in state.cleared.items() if t > now}
    s = replace(state, paused=paused, recent=tuple(r for r in state.recent if r[0] > since),
                cleared=cleared if len(cleared) != len(state.cleared) else state.cleared)
    wave = s.wave
    if wave is not None and wave.status is WaveStatus.HELD:
        names = tuple(dict.fromkeys(a for a in approvers if a))
        if names != wave.approvers:
            wave = replace(wave, approvers=names)
            if len(names) >= policy.approvals_required:
                wave = replace(wave, status=WaveStatus.APPROVED)
            out.waves.append(wave)
            s = replace(s, wave=wave)
    if s.paused:
        return s, out
    s = _step(s, now, policy)
    room = policy.wave_size - s.step_used
    if room <= 0:
        return s, out
    if wave is not None and wave.status is WaveStatus.APPROVED:
        go, rest = wave.members[:room], wave.members[room:]
        wave = replace(wave, members=rest, left=wave.left + len(go))
        if not rest:
            wave = replace(wave, status=WaveStatus.RELEASED, closed_at=now)
        out.waves.append(wave)
        s = _released(replace(s, wave=None if not rest else wave), go, now, policy, out)
        return s, out
    if wave is not None or not s.queue:
        return s, out
    n = min(room, len(s.queue))
    why = _over(s, n, now, total, policy)
    if why is not None:
        s, held = _new_wave(s, now, WaveStatus.HELD, why)
        held = replace(held, members=s.queue, size=len(s.queue))
        out.waves.append(held)
        return replace(s, queue=(), wave=held), out
    go = s.queue[:n]
    s, step = _new_wave(replace(s, queue=s.queue[n:]), now, WaveStatus.RELEASED, "within the thresholds")
    out.waves.append(replace(step, size=n, left=n, closed_at=now))
    return _released(replace(s, step_wave=step.wave_id, step_sent=n), go, now, policy, out), out


def _released(s: GuardState, go: Sequence[Kept], now: float, policy: GuardPolicy, out: Actions) -> GuardState:
    if not go:
        return s
    out.released.extend(go)
    out.counted += len(go)
    cleared = dict(s.cleared)
    until = now + policy.cleared_ttl_s
    for k in go:
        cleared[k.account] = until
    return replace(s, recent=(*s.recent, (now, len(go))), step_used=s.step_used + len(go), cleared=cleared)


def cancel(state: GuardState, account: str, command_id: str, now: float) -> tuple[GuardState, Wave | None]:
    """A kept disconnect was cancelled by its meter (payment arrived, relay wanted on): it leaves
    the queue or its wave. Returns the wave that changed, if any. Unknown commands change nothing."""
    queue = tuple(k for k in state.queue if not (k.account == account and k.command_id == command_id))
    if len(queue) != len(state.queue):
        return replace(state, queue=queue), None
    wave = state.wave
    if wave is None:
        return state, None
    members = tuple(k for k in wave.members if not (k.account == account and k.command_id == command_id))
    if len(members) == len(wave.members):
        return state, None
    changed = replace(wave, members=members, cancelled=wave.cancelled + 1)
    if not members:
        changed = replace(changed, status=WaveStatus.RELEASED, closed_at=now)
    return replace(state, wave=changed if members else None), changed


class ApprovalKind(StrEnum):
    APPROVED = "approved"  # enough distinct approvers now: the wave leaves on the next tick
    RECORDED = "recorded"  # counted; another approver is still needed
    DUPLICATE = "duplicate"  # this approver approved it already
    NOT_HELD = "not_held"  # the wave is not waiting for approval


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    kind: ApprovalKind
    approvers: tuple[str, ...]
    detail: str


def approval(status: WaveStatus, approvers: Sequence[str], approver: str, required: int) -> ApprovalOutcome:
    """What approving a wave in ``status`` (approved so far by ``approvers``) by ``approver`` does."""
    have = tuple(dict.fromkeys(approvers))
    if status is not WaveStatus.HELD:
        return ApprovalOutcome(ApprovalKind.NOT_HELD, have, f"the wave is {status}, not held")
    if approver in have:
        return ApprovalOutcome(ApprovalKind.DUPLICATE, have,
                               f"{approver} approved it already; {required} distinct approver(s) needed")
    now_have = (*have, approver)
    if len(now_have) >= required:
        return ApprovalOutcome(ApprovalKind.APPROVED, now_have, f"approved by {', '.join(now_have)}")
    return ApprovalOutcome(ApprovalKind.RECORDED, now_have,
                           f"{len(now_have)} of {required} approvals; another approver is needed")
