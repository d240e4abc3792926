"""The storage contract against the SQLite backend (files under tmp_path)."""

from __future__ import annotations

import pytest
from storage_contract import DeskStoreContract, ShardStoreContract

from storage import SqliteBackend, StorageBackend


class TestSqliteShardStore(ShardStoreContract):
    @pytest.fixture
    def backend(self) -> StorageBackend:
        return SqliteBackend()


class TestSqliteDeskStore(DeskStoreContract):
    @pytest.fixture
    def backend(self) -> StorageBackend:
        return SqliteBackend()
