"""Shared fixtures for every tier.

`pg_server`: one throwaway PostgreSQL for the whole run (Debian's initdb + pg_ctl, a loopback port,
fsync off: no test here pulls the power), stopped at the end. `pg_dsn`: a fresh, empty database on
it for one test. Both need Debian's postgresql package, which `scripts/install-ops-tools.sh`
installs: they never skip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from jodo.pglocal import LocalPostgres

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    with LocalPostgres(fsync=False) as pg:
        yield pg


@pytest.fixture
def pg_dsn(pg_server: LocalPostgres) -> str:
    """A DSN of a new, empty database (one per test: tests never see each other's rows)."""
    return pg_server.create_database(f"jodo_test_{next(_databases)}")
