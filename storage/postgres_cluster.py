"""Members and leases in PostgreSQL: what the cluster agrees on (tables in storage/postgres_schema.py).

Every call is one short autocommit statement (no transaction is held between calls), timed against
the database's clock. A lost connection raises `StorageUnavailable` (the DSN's password redacted)
and the next call reconnects, so a keeper rides out a PostgreSQL restart by itself. A call waits
about `statement_timeout_ms` at most: the server cancels a slow statement, and TCP keepalives with
`tcp_user_timeout` end, within a few seconds, a connection whose server went silent (a partition).

    acquire   UPDATE … WHERE owner IS NULL OR expires_at <= now  → epoch + 1 (one winner)
    renew     UPDATE … WHERE (owner, epoch) match AND not expired (all of a node's leases at once)
    release   UPDATE … SET owner = NULL, expires_at = -infinity WHERE (owner, epoch) match
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from storage.errors import StorageUnavailable, StoreClosed
from storage.postgres_schema import CLUSTER_MIGRATIONS, Fence, migrate

__all__ = ["ClusterStore", "Lease", "LeaseView", "MemberView", "redact"]

# key=value (quoted with backslash escapes, or bare) or a URI's user:password@
_PASSWORD = re.compile(
    r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)|(://[^:/@\s]+:)([^@\s]+)(@)", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with any libpq password (key=value, quoted or not, or URI form) replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}***" if m.group(1) else f"{m.group(3)}***{m.group(5)}", text)


def _check_ttl(ttl_s: float) -> None:
    if not 0 < ttl_s < 86_400:  # also refuses NaN
        raise ValueError(f"a lease ttl must be in (0, 86400) seconds, not {ttl_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease this node holds: `epoch` is its fencing token (+1 on every acquisition)."""

    resource: str
    owner: str
    epoch: int
    ttl_s: float

    def __post_init__(self) -> None:
        if not self.resource or not self.owner or self.epoch < 1:
            raise ValueError(f"a held lease needs a resource, an owner and an epoch >= 1: {self!r}")

    def fence(self) -> Fence:
        """What the shard group's store checks on every commit (storage.postgres_schema.check_fence)."""
        return Fence(resource=self.resource, owner=self.owner, epoch=self.epoch)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    """A lease row as the database sees it now (`expires_in_s` by the database's clock)."""

    resource: str
    owner: str | None
    epoch: int
    expires_in_s: float  # negative: expired that long ago (-1e9: released, never renewed since)
    acquired_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberView:
    """A member row as the database sees it now (`heartbeat_age_s` by the database's clock)."""

    node_id: str
    advertise: str
    http_url: str
    roles: tuple[str, ...]
    incarnation: int
    heartbeat_age_s: float
    draining: bool
    left: bool
    load: dict[str, object] = field(default_factory=dict)

    def live(self, suspect_after_s: float) -> bool:
        """Not left, and heard from within `suspect_after_s` (draining members are live)."""
        return not self.left and self.heartbeat_age_s < suspect_after_s


_MEMBER_COLUMNS = """node_id, advertise, http_url, roles, incarnation,
    EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8, draining, left_at IS NOT NULL, load"""


def _member(r: Sequence[Any]) -> MemberView:
    return MemberView(node_id=r[0], advertise=r[1], http_url=r[2],
                      roles=tuple(x for x in str(r[3]).split(",") if x), incarnation=int(r[4]),
                      heartbeat_age_s=float(r[5]), draining=bool(r[6]), left=bool(r[7]),
                      load=dict(r[8] or {}))


class ClusterStore:
    """The members table and the lease table of one cluster database (one connection, not shared
    between threads that need independent calls: each racing caller opens its own store).

    Raises StorageUnavailable (the database cannot be reached, a statement timed out; the next call
    reconnects), StoreClosed after `close()`, SchemaTooNew from the constructor, ValueError for a
    ttl out of range.
    """

    def __init__(self, dsn: str, *, connect_timeout_s: float = 5.0, statement_timeout_ms: int = 5000) -> None:
        """Connect and apply the "cluster" migrations. libpq waits at least 2 s to connect."""
        if statement_timeout_ms < 1:
            raise ValueError(f"statement_timeout_ms must be >= 1, not {statement_timeout_ms}")
        self._dsn = dsn
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._statement_timeout = statement_timeout_ms
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        conn = self._connection()
        try:
            migrate(conn, "cluster", CLUSTER_MIGRATIONS)
        except psycopg.Error as exc:
            self._broken()
            raise StorageUnavailable(redact(f"cluster schema: {exc}")) from None

    # ------------------------------------------------------------ connection

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreClosed("cluster store is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._broken()
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout,
                                   options=f"-c statement_timeout={self._statement_timeout}",
                                   tcp_user_timeout=self._statement_timeout, keepalives=1,
                                   keepalives_idle=2, keepalives_interval=1, keepalives_count=2)
        except psycopg.Error as exc:
            raise StorageUnavailable(redact(f"cluster store: cannot connect: {exc}")) from None
        self._conn = conn
        return conn

    def _broken(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _run(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError as exc:
            self._broken()
            raise StorageUnavailable(redact(f"cluster store: {exc}")) from None
        except psycopg.Error as exc:
            self._broken()
            raise StorageUnavailable(redact(f"cluster store: {type(exc).__name__}: {exc}")) from None

    def close(self) -> None:
        """Close the connection; every later call raises StoreClosed. Idempotent."""
        self._closed = True
        self._broken()

    # ------------------------------------------------------------ members

    def join(self, node_id: str, *, advertise: str, http_url: str, roles: Sequence[str] = ()) -> MemberView:
        """Insert or restart this node's row: incarnation + 1, heartbeat now, not draining, not
        left, load emptied. Returns the row as written."""
        if not node_id or any("," in r for r in roles):
            raise ValueError(f"a node id must be non-empty and roles free of commas: {node_id!r} {roles!r}")
        rows = self._run(
            f"""INSERT INTO jodo_members (node_id, advertise, http_url, roles)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (node_id) DO UPDATE SET advertise = EXCLUDED.advertise,
                   http_url = EXCLUDED.http_url, roles = EXCLUDED.roles,
                   incarnation = jodo_members.incarnation + 1, started_at = clock_timestamp(),
                   heartbeat_at = clock_timestamp(), draining = false, left_at = NULL,
                   load = '{{}}'::jsonb
               RETURNING {_MEMBER_COLUMNS}""",
            (node_id, advertise, http_url, ",".join(roles)),
        )
        return _member(rows[0])

    def heartbeat(self, node_id: str, load: Mapping[str, object] | None = None) -> None:
        """heartbeat_at = now, and `load` (JSON-serialisable) replaces the last one. A node that
        never joined is not added (no error)."""
        self._run("UPDATE jodo_members SET heartbeat_at = clock_timestamp(), load = %s WHERE node_id = %s",
                  (json.dumps(dict(load or {})), node_id))

    def leave(self, node_id: str) -> None:
        """A clean leave: the others stop counting this node at once (no suspicion timeout)."""
        self._run("UPDATE jodo_members SET left_at = clock_timestamp() WHERE node_id = %s", (node_id,))

    def set_draining(self, node_id: str, draining: bool) -> bool:
        """Mark a member (any node, e.g. from an operator's request); False if there is no such member."""
        rows = self._run("UPDATE jodo_members SET draining = %s WHERE node_id = %s RETURNING node_id",
                         (draining, node_id))
        return bool(rows)

    def members(self) -> list[MemberView]:
        """Every member row, left ones included, by node id."""
        return [_member(r) for r in self._run(f"SELECT {_MEMBER_COLUMNS} FROM jodo_members ORDER BY node_id")]

    # ------------------------------------------------------------ leases

    def ensure_resources(self, resources: Sequence[str]) -> None:
        """Create the missing lease rows (no owner, epoch 0); existing rows are left as they are."""
        if resources:
            self._run("INSERT INTO jodo_leases (resource) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                      (list(resources),))

    def leases(self, prefix: str = "") -> list[LeaseView]:
        """Every lease row whose resource starts with `prefix`, by resource."""
        rows = self._run(
            """SELECT resource, owner, epoch,
                      CASE WHEN expires_at = '-infinity' THEN -1e9
                           ELSE EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 END,
                      EXTRACT(EPOCH FROM acquired_at)::float8
               FROM jodo_leases WHERE starts_with(resource, %s) ORDER BY resource""",
            (prefix,),
        )
        return [LeaseView(resource=r[0], owner=r[1], epoch=int(r[2]), expires_in_s=float(r[3]),
                          acquired_at=None if r[4] is None else float(r[4])) for r in rows]

    def acquire(self, resource: str, node_id: str, ttl_s: float) -> Lease | None:
        """Take `resource` if nobody holds it (no owner, or expired by the database's clock):
        epoch + 1, expiry now + ttl. None if it is held, even by `node_id` itself (an earlier
        incarnation may still be writing), or if the row does not exist (see ensure_resources).
        One UPDATE: of two racing nodes exactly one gets the row."""
        _check_ttl(ttl_s)
        rows = self._run(
            """UPDATE jodo_leases SET owner = %s, epoch = epoch + 1,
                   expires_at = clock_timestamp() + make_interval(secs => %s),
                   acquired_at = clock_timestamp(), renewed_at = clock_timestamp()
               WHERE resource = %s AND (owner IS NULL OR expires_at <= clock_timestamp())
               RETURNING epoch""",
            (node_id, ttl_s, resource),
        )
        return Lease(resource=resource, owner=node_id, epoch=int(rows[0][0]), ttl_s=ttl_s) if rows else None

    def renew(self, leases: Sequence[Lease], ttl_s: float) -> set[str]:
        """Extend, in one statement, every lease still held at its (owner, epoch) and not yet
        expired; returns the resources extended. A lease missing from the answer is lost: stop
        using it at once (an expired lease is never revived, even if nobody took it)."""
        _check_ttl(ttl_s)
        if not leases:
            return set()
        rows = self._run(
            """UPDATE jodo_leases AS l SET expires_at = clock_timestamp() + make_interval(secs => %s),
                   renewed_at = clock_timestamp()
               FROM (SELECT unnest(%s::text[]) AS resource, unnest(%s::text[]) AS owner,
                            unnest(%s::bigint[]) AS epoch) AS mine
               WHERE l.resource = mine.resource AND l.owner = mine.owner AND l.epoch = mine.epoch
                 AND l.expires_at > clock_timestamp()
               RETURNING l.resource""",
            (ttl_s, [x.resource for x in leases], [x.owner for x in leases], [x.epoch for x in leases]),
        )
        return {str(r[0]) for r in rows}

    def release(self, lease: Lease) -> bool:
        """Give the lease up (after stop and flush): no owner, expired; the epoch stays, so the
        next acquisition is epoch + 1. False if it was no longer held at (owner, epoch)."""
        rows = self._run(
            """UPDATE jodo_leases SET owner = NULL, expires_at = '-infinity'
               WHERE resource = %s AND owner = %s AND epoch = %s RETURNING resource""",
            (lease.resource, lease.owner, lease.epoch),
        )
        return bool(rows)

    def now(self) -> float:
        """The database's clock, unix seconds."""
        return float(self._run("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")[0][0])
