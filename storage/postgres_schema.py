"""PostgreSQL schema: versioned migrations per component, the cluster tables, and the fence check.

Every node applies the migrations it knows on start (`migrate`), under a transaction-scoped
advisory lock, so three nodes starting at once apply each step exactly once. Versions are kept per
component in `jodo_schema` (`store`: journal, snapshots, outbox, ledger, dead letters; `cluster`:
members and leases), so the two evolve independently. A database whose version is newer than this
code raises `SchemaTooNew` and nothing is changed.

The cluster tables (Orleans' pattern: membership in a SQL table; Kleppmann's fencing tokens):

    jodo_members   one row per node: heartbeat_at (the database's clock), incarnation (+1 per start),
                   draining, left_at (a clean leave)
    jodo_leases    one row per resource ("group:3", "head_end:hes-sim"): owner (NULL when released),
                   epoch (the fencing token: +1 on every acquisition), expires_at (the database's clock)

Every time comparison uses the database's clock (`clock_timestamp()`), never a node's: nodes'
clocks may disagree, the one database does not.

`check_fence(cur, fence)` is called inside a store's write transaction: it takes a share lock on
the lease row, so a take-over (an UPDATE of that row) waits for the write to commit, and every
write after the take-over sees the new epoch and is refused with `Fenced`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.errors import Fenced, SchemaTooNew

__all__ = ["CLUSTER_MIGRATIONS", "Fence", "check_fence", "migrate"]

# a constant key for pg_advisory_xact_lock: "jodo" in ASCII
_MIGRATION_LOCK = 0x6A6F646F

_SCHEMA_TABLE = """CREATE TABLE IF NOT EXISTS jodo_schema (
    component text PRIMARY KEY,
    version integer NOT NULL CHECK (version >= 0)
)"""

#: Migration n (1-based) of the cluster component is CLUSTER_MIGRATIONS[n - 1]; append only.
CLUSTER_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jodo_members (
            node_id text PRIMARY KEY,
            advertise text NOT NULL,
            http_url text NOT NULL,
            roles text NOT NULL DEFAULT '',
            incarnation bigint NOT NULL DEFAULT 1,
            started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            draining boolean NOT NULL DEFAULT false,
            left_at timestamptz,
            load jsonb NOT NULL DEFAULT '{}'::jsonb
        )""",
        """CREATE TABLE jodo_leases (
            resource text PRIMARY KEY,
            owner text,
            epoch bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
            expires_at timestamptz NOT NULL DEFAULT '-infinity',
            acquired_at timestamptz,
            renewed_at timestamptz
        )""",
        "CREATE INDEX jodo_leases_by_owner ON jodo_leases (owner)",
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """What a store's owner must still hold for its writes to be accepted: lease `resource`
    ("group:3") owned by `owner` (node id) at `epoch`, not expired."""

    resource: str
    owner: str
    epoch: int


def migrate(conn: Any, component: str, migrations: Sequence[Sequence[str]]) -> int:
    """Apply the `component`'s migrations not yet applied, in one transaction; returns the version.

    `conn` is a psycopg connection, not inside a transaction. Raises SchemaTooNew (nothing
    changed) if the database is ahead of `migrations`.
    """
    target = len(migrations)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        cur.execute(_SCHEMA_TABLE)
        cur.execute("SELECT version FROM jodo_schema WHERE component = %s", (component,))
        row = cur.fetchone()
        found = int(row[0]) if row else 0
        if found > target:
            raise SchemaTooNew(f"postgresql:{component}", found, target)
        for step in migrations[found:]:
            for statement in step:
                cur.execute(statement)
        if found < target:
            cur.execute(
                """INSERT INTO jodo_schema (component, version) VALUES (%s, %s)
                   ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version""",
                (component, target),
            )
    return target


def check_fence(cur: Any, fence: Fence | None) -> None:
    """Inside a write transaction: refuse the write unless `fence` still holds (no-op for None).

    Raises Fenced; the caller's transaction must then roll back (nothing of it is applied).
    """
    if fence is None:
        return
    cur.execute(
        """SELECT owner, epoch, expires_at > clock_timestamp() FROM jodo_leases
           WHERE resource = %s FOR SHARE""",
        (fence.resource,),
    )
    row = cur.fetchone()
    if row is None:
        raise Fenced(fence.resource, fence.owner, fence.epoch, None, None)
    owner, epoch, live = row
    if owner != fence.owner or int(epoch) != fence.epoch or not live:
        raise Fenced(fence.resource, fence.owner, fence.epoch, owner, int(epoch) if live else None)
