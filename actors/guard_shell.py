"""The disconnect guard inside a HeadEndGateway: the pure rules (domain/guard.py) plus their store.

Thin: the gateway hands over the relay commands of each `RelayCommandBatch` (`offer`), every
`CancelRelayCommand` (`cancel`) and its tick (`tick`); this answers what to submit to the head-end
now and which `ReportRelayResult`s (status held / released) go back to which shard group. Every step
is computed, written to the guard store, and only then assigned, so a crash between leaves the
store and the shards' parked commands (re-sent to a restarted gateway) to rebuild from.

A store failure keeps the automatic disconnects of that batch unanswered (their shard sends them
again) and lets everything else through: the guard fails closed for disconnects, open for
reconnections.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from domain.commands import ReportRelayResult
from domain.effects import SendRelayCommand
from domain.enums import RelayResultStatus
from domain.guard import (
    Actions,
    GuardPolicy,
    GuardState,
    Incoming,
    Kept,
    Wave,
    WaveStatus,
    admit,
    cancel,
    guarded,
    tick,
)
from storage.errors import StorageError
from storage.sqlite_guard import GuardStore

__all__ = ["GUARD_TICK_S", "GatewayGuard", "GroupReport"]

log = logging.getLogger("jodo.guard")
GUARD_TICK_S = 0.25  # how often a gateway reads the kill switch and approvals ("within one tick")
GroupReport = tuple[int, ReportRelayResult]


def _report(k: Kept, status: RelayResultStatus, wave_id: str | None = None) -> GroupReport:
    return k.group, ReportRelayResult(account=k.account, command_id=k.command_id, status=status,
                                      error_code=wave_id)


class GatewayGuard:
    def __init__(self, head_end: str, policy: GuardPolicy, store: GuardStore, now: float) -> None:
        self.head_end, self.policy, self.store = head_end, policy, store
        rec = store.recover(head_end, now, window_s=policy.window_s, cleared_ttl_s=policy.cleared_ttl_s)
        self.state = GuardState(head_end=head_end, wave=rec.wave, recent=rec.recent, cleared=rec.cleared,
                                next_seq=rec.next_seq, paused=store.switch().paused)
        self.last_tick = -1.0
        self.errors = 0  # store failures not yet counted in a metric (the gateway drains them)
        self.left = 0  # disconnections let out not yet counted in a metric (the gateway drains them)
        if rec.wave is not None:
            log.warning("disconnect wave still %s after a restart", rec.wave.status,
                        extra={"head_end": head_end, "wave_id": rec.wave.wave_id,
                               "kept": len(rec.wave.members)})

    def _total(self, now: float) -> int:
        return self.store.left_since(now - self.policy.window_s)

    def offer(
        self, commands: Sequence[SendRelayCommand], group: int, now: float
    ) -> tuple[list[SendRelayCommand], list[GroupReport]]:
        """What to submit now, and the held answers for what the guard keeps."""
        if not self.policy.enabled or not any(guarded(c.action, c.origin) for c in commands):
            return list(commands), []
        items = [Incoming(c.account, c.command_id, group, c.action, c.origin) for c in commands]
        try:
            state, acts = admit(self.state, items, now, self._total(now), self.policy)
            self._save(now, acts)
        except StorageError as exc:
            self._failed("offer", exc)
            return [c for c in commands if not guarded(c.action, c.origin)], []
        self.state = state
        return [commands[i] for i in acts.send], [_report(k, RelayResultStatus.HELD, w) for k, w in acts.kept]

    def cancel(self, account: str, command_id: str, now: float) -> None:
        state, wave = cancel(self.state, account, command_id, now)
        if state is self.state:
            return
        try:
            self.store.save_step(self.head_end, now, waves=[wave] if wave else [],
                                 cancelled=[Kept(account, command_id, 0)])
        except StorageError as exc:
            self._failed("cancel", exc)
            return
        self.state = state
        log.info("kept disconnect cancelled by its meter",
                 extra={"head_end": self.head_end, "account": account, "command_id": command_id})

    def due(self, now: float) -> bool:
        return self.policy.enabled and now - self.last_tick >= GUARD_TICK_S

    def tick(self, now: float) -> list[GroupReport]:
        """Read the switch and approvals; release what may leave. Returns the released answers."""
        self.last_tick = now
        try:
            paused = self.store.switch().paused
            wave = self.state.wave
            approvers = self.store.approvers(wave.wave_id) if wave is not None else ()
            state, acts = tick(self.state, now, self._total(now), self.policy, paused=paused,
                               approvers=approvers)
            cut = state.wave  # a wave cut from the queue and held just now: all its members are new rows
            fresh = (cut is not None and cut.status is WaveStatus.HELD
                     and (wave is None or wave.wave_id != cut.wave_id))
            held = cut if fresh else None
            self._save(now, acts, held_wave=held)
        except StorageError as exc:
            self._failed("tick", exc)
            return []
        if paused != self.state.paused:
            log.warning("disconnections %s", "paused" if paused else "resumed",
                        extra={"head_end": self.head_end})
        for w in acts.waves:
            if w.wave_id == (held.wave_id if held else None):
                log.warning("disconnect wave held", extra={"head_end": self.head_end, "wave_id": w.wave_id,
                                                          "kept": len(w.members), "reason": w.reason})
            elif wave is not None and w.wave_id == wave.wave_id and w.status is not wave.status:
                log.warning("disconnect wave %s", w.status,
                            extra={"head_end": self.head_end, "wave_id": w.wave_id, "approvers": w.approvers})
        self.state = state
        return [_report(k, RelayResultStatus.RELEASED) for k in acts.released]

    def _save(self, now: float, acts: Actions, *, held_wave: Wave | None = None) -> None:
        self.store.save_step(self.head_end, now, waves=acts.waves, kept=acts.kept, released=acts.released,
                             counted=acts.counted, held_wave=held_wave)
        self.left += acts.counted

    def drain(self) -> tuple[int, int]:
        """(disconnections let out, store failures) since the last call, for the metrics."""
        out = (self.left, self.errors)
        self.left = self.errors = 0
        return out

    def _failed(self, where: str, exc: StorageError) -> None:
        self.errors += 1
        log.error("disconnect guard store failed", extra={"head_end": self.head_end, "step": where,
                                                          "error": str(exc)})

    def gauges(self) -> tuple[int, int, bool]:
        """(held waves, disconnects kept, paused) at this head-end."""
        wave = self.state.wave
        held = 1 if wave is not None and wave.status is WaveStatus.HELD else 0
        kept = len(self.state.queue) + (len(wave.members) if wave is not None else 0)
        return held, kept, self.state.paused
