"""The disconnect guard's durable state: waves, their kept members, approvals, the kill switch.

One SQLite file per node (``<data_dir>/guard.sqlite3``), shared by the node's gateway actors (each
writes its own head-end's waves) and the front door (approvals and pause/resume, by an operator).
Gateways read the switch and approvals on every tick, so the file is the durable mailbox between
an operator's decision and the waves: a decision survives any restart because it *is* a row.

Audit: every approval and every pause/resume is a row that is never updated or deleted (who, when,
through what), and the front door logs a line for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.guard import QUEUED, ApprovalKind, ApprovalOutcome, Kept, Wave, WaveStatus, approval
from storage.api import StoreOptions
from storage.sqlite_base import SqliteFile

__all__ = ["GUARD_FILE", "GuardStore", "HeadEndRecovery", "SwitchState"]

GUARD_FILE = "guard.sqlite3"
_KIND = "jodo-guard"
SCHEMA_VERSION = 2
# released/cancelled members are found by (account, command_id): without this index each UPDATE
# scanned every kept member, so releasing a held wave of 25 000 took ~30 s inside the write lock
# (measured, session 7) while the operator's GET /v1/disconnects waited on it and failed
_BY_COMMAND = "CREATE INDEX IF NOT EXISTS guard_members_by_command ON guard_members (account, command_id)"
_MIGRATIONS = {1: (_BY_COMMAND,)}
_DDL = (
    """CREATE TABLE guard_waves (
        wave_id TEXT PRIMARY KEY, head_end TEXT NOT NULL, status TEXT NOT NULL, opened_at REAL NOT NULL,
        closed_at REAL, reason TEXT NOT NULL, size INTEGER NOT NULL, left_count INTEGER NOT NULL,
        cancelled INTEGER NOT NULL, seq INTEGER NOT NULL)""",
    "CREATE INDEX guard_waves_by_head_end ON guard_waves (head_end, seq)",
    """CREATE TABLE guard_members (
        wave_id TEXT NOT NULL, account TEXT NOT NULL, command_id TEXT NOT NULL, grp INTEGER NOT NULL,
        state TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (wave_id, account))""",
    "CREATE INDEX guard_members_by_state ON guard_members (state, at)",
    _BY_COMMAND,
    """CREATE TABLE guard_approvals (
        wave_id TEXT NOT NULL, approver TEXT NOT NULL, at REAL NOT NULL, via TEXT NOT NULL,
        PRIMARY KEY (wave_id, approver))""",
    """CREATE TABLE guard_switch_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, paused INTEGER NOT NULL, by TEXT NOT NULL, at REAL NOT NULL,
        reason TEXT NOT NULL, via TEXT NOT NULL)""",
    """CREATE TABLE guard_left (
        head_end TEXT NOT NULL, at REAL NOT NULL, count INTEGER NOT NULL)""",
    "CREATE INDEX guard_left_by_at ON guard_left (at)",
)


@dataclass(frozen=True, slots=True)
class SwitchState:
    paused: bool
    by: str = ""
    at: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HeadEndRecovery:
    """What a (re)started gateway needs to rebuild its `GuardState`."""

    wave: Wave | None
    recent: tuple[tuple[float, int], ...]
    cleared: dict[str, float]
    next_seq: int


def _seq(wave_id: str) -> int:
    tail = wave_id.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class GuardStore(SqliteFile):
    def __init__(self, path: Path, options: StoreOptions | None = None) -> None:
        super().__init__(path, options or StoreOptions(), kind=_KIND, version=SCHEMA_VERSION, ddl=_DDL,
                         migrations=_MIGRATIONS)

    @classmethod
    def in_dir(cls, data_dir: str | Path, options: StoreOptions | None = None) -> GuardStore:
        return cls(Path(data_dir) / GUARD_FILE, options)

    # ------------------------------------------------------------ the gateway's side

    def save_step(
        self,
        head_end: str,
        now: float,
        *,
        waves: Sequence[Wave] = (),
        kept: Sequence[tuple[Kept, str]] = (),
        released: Sequence[Kept] = (),
        cancelled: Sequence[Kept] = (),
        counted: int = 0,
        held_wave: Wave | None = None,
    ) -> None:
        """One guard step in one transaction. ``held_wave``: a wave cut from the queue just now,
        whose members were kept as QUEUED so far (all its members are written)."""
        if not (waves or kept or released or cancelled or counted):
            return
        with self._write() as db:
            db.executemany(
                """INSERT INTO guard_waves (wave_id, head_end, status, opened_at, closed_at, reason, size,
                       left_count, cancelled, seq) VALUES (?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT (wave_id) DO UPDATE SET status=excluded.status, closed_at=excluded.closed_at,
                       size=excluded.size, left_count=excluded.left_count, cancelled=excluded.cancelled""",
                [(w.wave_id, head_end, str(w.status), w.opened_at, w.closed_at, w.reason, w.size, w.left,
                  w.cancelled, _seq(w.wave_id)) for w in waves],
            )
            members = [(wid, k) for k, wid in kept if wid != QUEUED]
            if held_wave is not None:
                members += [(held_wave.wave_id, k) for k in held_wave.members]
            db.executemany(
                """INSERT INTO guard_members (wave_id, account, command_id, grp, state, at)
                   VALUES (?,?,?,?,'kept',?) ON CONFLICT (wave_id, account) DO UPDATE SET
                       command_id=excluded.command_id, grp=excluded.grp, state='kept', at=excluded.at""",
                [(wid, k.account, k.command_id, k.group, now) for wid, k in members],
            )
            for state, rows in (("released", released), ("cancelled", cancelled)):
                db.executemany(
                    "UPDATE guard_members SET state=?, at=? "
                    "WHERE account=? AND command_id=? AND state='kept'",
                    [(state, now, k.account, k.command_id) for k in rows],
                )
            if counted:
                db.execute("INSERT INTO guard_left (head_end, at, count) VALUES (?,?,?)",
                           (head_end, now, counted))

    def recover(self, head_end: str, now: float, *, window_s: float, cleared_ttl_s: float) -> HeadEndRecovery:
        row = self._one(
            """SELECT wave_id, status, opened_at, reason, size, left_count, cancelled FROM guard_waves
               WHERE head_end=? AND status IN ('held','approved') ORDER BY seq LIMIT 1""", (head_end,))
        wave = None
        if row is not None:
            members = tuple(Kept(a, c, g) for a, c, g in self._rows(
                "SELECT account, command_id, grp FROM guard_members WHERE wave_id=? AND state='kept' "
                "ORDER BY rowid", (row[0],)))
            wave = Wave(wave_id=row[0], head_end=head_end, status=WaveStatus(row[1]), opened_at=row[2],
                        reason=row[3], size=row[4], left=row[5], cancelled=row[6], members=members,
                        approvers=self.approvers(row[0]))
        recent = tuple((at, n) for at, n in self._rows(
            "SELECT at, count FROM guard_left WHERE head_end=? AND at>? ORDER BY at",
            (head_end, now - window_s)))
        cleared = {a: at + cleared_ttl_s for a, at in self._rows(
            """SELECT m.account, m.at FROM guard_members m JOIN guard_waves w ON w.wave_id=m.wave_id
               WHERE w.head_end=? AND m.state='released' AND m.at>?""", (head_end, now - cleared_ttl_s))}
        top = self._one("SELECT MAX(seq) FROM guard_waves WHERE head_end=?", (head_end,))
        return HeadEndRecovery(wave=wave, recent=recent, cleared=cleared, next_seq=(top[0] or 0) + 1)

    def left_since(self, since: float) -> int:
        """Disconnections that left any head-end of this node after ``since`` (the node-wide total)."""
        row = self._one("SELECT COALESCE(SUM(count), 0) FROM guard_left WHERE at>?", (since,))
        return int(row[0])

    def prune(self, before: float) -> None:
        with self._write() as db:
            db.execute("DELETE FROM guard_left WHERE at<?", (before,))

    # ------------------------------------------------------------ the operator's side

    def switch(self) -> SwitchState:
        row = self._one("SELECT paused, by, at, reason FROM guard_switch_log ORDER BY seq DESC LIMIT 1")
        return SwitchState(False) if row is None else SwitchState(bool(row[0]), row[1], row[2], row[3])

    def set_paused(
        self, paused: bool, *, by: str, at: float, reason: str = "", via: str = "cli"
    ) -> SwitchState:
        with self._write() as db:
            db.execute("INSERT INTO guard_switch_log (paused, by, at, reason, via) VALUES (?,?,?,?,?)",
                       (int(paused), by, at, reason, via))
        return SwitchState(paused, by, at, reason)

    def approvers(self, wave_id: str) -> tuple[str, ...]:
        return tuple(r[0] for r in self._rows(
            "SELECT approver FROM guard_approvals WHERE wave_id=? ORDER BY at, approver", (wave_id,)))

    def approve(
        self, wave_id: str, approver: str, *, at: float, required: int, via: str
    ) -> ApprovalOutcome | None:
        """Record ``approver``'s approval of a held wave (None: no such wave). Refused without a row
        for a wave that is not held or an approver who approved it already."""
        with self._write() as db:
            row = db.execute("SELECT status FROM guard_waves WHERE wave_id=?", (wave_id,)).fetchone()
            if row is None:
                return None
            have = [r[0] for r in db.execute(
                "SELECT approver FROM guard_approvals WHERE wave_id=? ORDER BY at, approver", (wave_id,))]
            outcome = approval(WaveStatus(row[0]), have, approver, required)
            if outcome.kind in (ApprovalKind.APPROVED, ApprovalKind.RECORDED):
                db.execute("INSERT INTO guard_approvals (wave_id, approver, at, via) VALUES (?,?,?,?)",
                           (wave_id, approver, at, via))
            return outcome

    def waves(self, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE status=?", [status]) if status else ("", [])
        rows = self._rows(
            f"""SELECT wave_id, head_end, status, opened_at, closed_at, reason, size, left_count, cancelled
                FROM guard_waves {where} ORDER BY opened_at DESC, seq DESC LIMIT ?""", [*params, limit])
        return [self._wave_doc(r) for r in rows]

    def wave(self, wave_id: str, *, members: int = 20) -> dict[str, Any] | None:
        row = self._one(
            """SELECT wave_id, head_end, status, opened_at, closed_at, reason, size, left_count, cancelled
               FROM guard_waves WHERE wave_id=?""", (wave_id,))
        if row is None:
            return None
        doc = self._wave_doc(row)
        doc["approvals"] = [{"approver": a, "at": at, "via": v} for a, at, v in self._rows(
            "SELECT approver, at, via FROM guard_approvals WHERE wave_id=? ORDER BY at", (wave_id,))]
        doc["members_kept"] = [{"account": a, "command_id": c} for a, c in self._rows(
            "SELECT account, command_id FROM guard_members WHERE wave_id=? AND state='kept' ORDER BY rowid "
            "LIMIT ?", (wave_id, members))]
        return doc

    def held_counts(self) -> dict[str, tuple[int, int]]:
        """head-end → (held waves, disconnects they keep)."""
        out: dict[str, tuple[int, int]] = {}
        for head_end, waves, kept in self._rows(
                """SELECT w.head_end, COUNT(DISTINCT w.wave_id), COUNT(m.account) FROM guard_waves w
                   LEFT JOIN guard_members m ON m.wave_id=w.wave_id AND m.state='kept'
                   WHERE w.status='held' GROUP BY w.head_end"""):
            out[head_end] = (int(waves), int(kept))
        return out

    def _wave_doc(self, r: Sequence[Any]) -> dict[str, Any]:
        kept = self._one("SELECT COUNT(*) FROM guard_members WHERE wave_id=? AND state='kept'", (r[0],))[0]
        return {"wave_id": r[0], "head_end": r[1], "status": r[2], "opened_at": r[3], "closed_at": r[4],
                "reason": r[5], "size": r[6], "left": r[7], "cancelled": r[8], "kept": int(kept),
                "approvers": list(self.approvers(r[0]))}

