"""A throwaway PostgreSQL server: Debian's initdb + pg_ctl in a directory, on a loopback port.

For tests, benches and `jodo demo --cluster` (never for production: a real cluster points
`[storage] dsn` at a managed server). The server listens on one loopback address only, with a
Unix socket in its own directory, password authentication (scram-sha-256) for TCP, and is stopped
(`pg_ctl stop -m immediate`) when the context exits::

    with LocalPostgres(tmp_dir) as pg:
        dsn = pg.create_database("jodo_test")
        ...

Running as root (CI, this project's machines), the server runs as the `postgres` system user
through `runuser`: PostgreSQL refuses to run as root. `scripts/install-ops-tools.sh` installs
Debian's `postgresql` package when no initdb is found.

Errors::

    LocalPostgresError   initdb/pg_ctl missing or failed; the message carries the tool's output
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from jodo.ports import free_port as _free_port

__all__ = ["LocalPostgres", "LocalPostgresError", "find_pg_bin"]

_USER = "jodo"
_RUN_AS = "postgres"  # Debian's package creates this system user


class LocalPostgresError(RuntimeError):
    """initdb or pg_ctl is missing or failed. Caller: run scripts/install-ops-tools.sh; read the output."""


def find_pg_bin() -> Path:
    """Debian's PostgreSQL binaries (the newest major version installed), or $JODO_PG_BIN."""
    override = os.environ.get("JODO_PG_BIN")
    if override:
        return Path(override)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise LocalPostgresError(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: "
            "run scripts/install-ops-tools.sh (installs Debian's postgresql package)"
        )
    return Path(found[-1]).parent


class LocalPostgres:
    """One throwaway server under `base_dir` (default: a new directory under /tmp; removed on exit
    unless `keep`)."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fsync: bool = True,
        keep: bool = False,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        if not host.startswith("127."):
            raise LocalPostgresError(f"a throwaway server listens on loopback only, not {host!r}")
        # under /tmp by default: the `postgres` user must be able to reach it (pytest's tmp_path
        # lives under a root-only directory)
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="jodo-pg-"))
        self.host = host
        self.port = port or _free_port(host)
        self.password = secrets.token_urlsafe(18)
        self.user = _USER
        self._fsync = fsync
        self._keep = keep
        self._settings = dict(extra_settings or {})
        self._bin = find_pg_bin()
        self._as_root = os.geteuid() == 0
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    def _run(self, *argv: str, timeout: float = 120.0) -> str:
        cmd = [str(self._bin / argv[0]), *argv[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", _RUN_AS, "--", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalPostgresError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise LocalPostgresError(f"{' '.join(argv[:2])} failed ({done.returncode}): "
                                     f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def _chown(self, path: Path) -> None:
        if self._as_root:
            shutil.chown(path, user=_RUN_AS, group=_RUN_AS)

    def init(self) -> None:
        """initdb with a password for `jodo` (scram-sha-256 on TCP, peer on the socket)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.base_dir)
        if self._as_root:
            # the `postgres` user must be able to reach its directory: add search permission (x, not
            # read) to ancestors that lack it (mkdtemp's 0700 directories, pytest's tmp dirs)
            for parent in self.base_dir.resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, (mode & 0o7777) | 0o001)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        pwfile = self.base_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.user, "--pwfile", str(pwfile),
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale")
        pwfile.unlink()
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on" if self._fsync else "off",
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "log_min_messages": "warning",
            "password_encryption": "'scram-sha-256'",
            **self._settings,
        }
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# jodo throwaway server\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())

    def start(self, timeout: float = 60.0) -> None:
        if not self.data_dir.exists():
            self.init()
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)
        self._running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` = like a crash: no checkpoint, recovery on next start)."""
        if self._running:
            self._running = False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop("immediate")
        finally:
            if not self._keep:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ databases

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq DSN for `dbname` over TCP with the password (never log it: see `safe_dsn`)."""
        return (f"host={self.host} port={self.port} dbname={dbname} user={self.user} "
                f"password={self.password} connect_timeout=5")

    def safe_dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={self.user} password=***"

    def create_database(self, dbname: str) -> str:
        """CREATE DATABASE `dbname` (a plain identifier) and return its DSN."""
        if not dbname.replace("_", "").isalnum():
            raise LocalPostgresError(f"database name must be a plain identifier, not {dbname!r}")
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{dbname}"')
                return self.dsn(dbname)
            except psycopg.OperationalError:
                # template1 busy (another CREATE DATABASE in flight): retry within the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
