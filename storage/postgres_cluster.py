"""Members and leases in PostgreSQL: what the cluster agrees on (tables in storage/postgres_schema.py).

Every call is one short autocommit statement (no transaction is held between calls), timed against
the database's clock. A lost connection raises `StorageUnavailable` (the DSN's password redacted)
and the next call reconnects, so a keeper rides out a PostgreSQL restart by itself.

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

from storage.errors import StorageUnavailable
from storage.postgres_schema import CLUSTER_MIGRATIONS, Fence, migrate

__all__ = ["ClusterStore", "Lease", "LeaseView", "MemberView", "redact"]

_PASSWORD = re.compile(r"(password\s*=\s*)(\S+)|(://[^:/@]+:)([^@]+)(@)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with any libpq password (key=value or URI form) replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m.group(1)}***" if m.group(1) else f"{m.group(3)}***{m.group(5)}", text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    resource: str
    owner: str
    epoch: int
    ttl_s: float

    def fence(self) -> Fence:
        return Fence(resource=self.resource, owner=self.owner, epoch=self.epoch)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    resource: str
    owner: str | None
    epoch: int
    expires_in_s: float  # negative: expired that long ago
    acquired_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberView:
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
        return not self.left and self.heartbeat_age_s < suspect_after_s


class ClusterStore:
    def __init__(self, dsn: str, *, connect_timeout_s: float = 5.0, statement_timeout_ms: int = 5000) -> None:
        self._dsn = dsn
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._statement_timeout = statement_timeout_ms
        self._conn: psycopg.Connection[Any] | None = None
        conn = self._connection()
        try:
            migrate(conn, "cluster", CLUSTER_MIGRATIONS)
        except psycopg.Error as exc:
            self._broken()
            raise StorageUnavailable(redact(f"cluster schema: {exc}")) from None

    # ------------------------------------------------------------ connection

    def _connection(self) -> psycopg.Connection[Any]:
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
        self._broken()

    # ------------------------------------------------------------ members

    def join(self, node_id: str, *, advertise: str, http_url: str, roles: Sequence[str] = ()) -> MemberView:
        self._run(
            """INSERT INTO jodo_members (node_id, advertise, http_url, roles)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (node_id) DO UPDATE SET advertise = EXCLUDED.advertise,
                   http_url = EXCLUDED.http_url, roles = EXCLUDED.roles,
                   incarnation = jodo_members.incarnation + 1, started_at = clock_timestamp(),
                   heartbeat_at = clock_timestamp(), draining = false, left_at = NULL""",
            (node_id, advertise, http_url, ",".join(roles)),
        )
        return next(m for m in self.members() if m.node_id == node_id)

    def heartbeat(self, node_id: str, load: Mapping[str, object] | None = None) -> None:
        self._run("UPDATE jodo_members SET heartbeat_at = clock_timestamp(), load = %s WHERE node_id = %s",
                  (json.dumps(dict(load or {})), node_id))

    def leave(self, node_id: str) -> None:
        self._run("UPDATE jodo_members SET left_at = clock_timestamp() WHERE node_id = %s", (node_id,))

    def set_draining(self, node_id: str, draining: bool) -> bool:
        rows = self._run("UPDATE jodo_members SET draining = %s WHERE node_id = %s RETURNING node_id",
                         (draining, node_id))
        return bool(rows)

    def members(self) -> list[MemberView]:
        rows = self._run(
            """SELECT node_id, advertise, http_url, roles, incarnation,
                      EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8, draining,
                      left_at IS NOT NULL, load
               FROM jodo_members ORDER BY node_id"""
        )
        return [
            MemberView(node_id=r[0], advertise=r[1], http_url=r[2],
                       roles=tuple(x for x in str(r[3]).split(",") if x), incarnation=int(r[4]),
                       heartbeat_age_s=float(r[5]), draining=bool(r[6]), left=bool(r[7]),
                       load=dict(r[8] or {}))
            for r in rows
        ]

    # ------------------------------------------------------------ leases

    def ensure_resources(self, resources: Sequence[str]) -> None:
        if resources:
            self._run("INSERT INTO jodo_leases (resource) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                      (list(resources),))

    def leases(self, prefix: str = "") -> list[LeaseView]:
        rows = self._run(
            """SELECT resource, owner, epoch,
                      CASE WHEN expires_at = '-infinity' THEN -1e9
                           ELSE EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 END,
                      EXTRACT(EPOCH FROM acquired_at)::float8
               FROM jodo_leases WHERE resource LIKE %s ORDER BY resource""",
            (prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
        )
        return [LeaseView(resource=r[0], owner=r[1], epoch=int(r[2]), expires_in_s=float(r[3]),
                          acquired_at=None if r[4] is None else float(r[4])) for r in rows]

    def acquire(self, resource: str, node_id: str, ttl_s: float) -> Lease | None:
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
        rows = self._run(
            """UPDATE jodo_leases SET owner = NULL, expires_at = '-infinity'
               WHERE resource = %s AND owner = %s AND epoch = %s RETURNING resource""",
            (lease.resource, lease.owner, lease.epoch),
        )
        return bool(rows)

    def now(self) -> float:
        return float(self._run("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")[0][0])
