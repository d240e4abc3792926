"""The storage contract against the in-memory backend used by actor-tier tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_contract import DeskStoreContract, ShardStoreContract

from storage import MemoryBackend, StorageBackend
from storage.memory import forget


class _Memory:
    @pytest.fixture
    def backend(self, location: Path) -> Iterator[StorageBackend]:
        yield MemoryBackend()
        forget(location)


class TestMemoryShardStore(_Memory, ShardStoreContract):
    pass


class TestMemoryDeskStore(_Memory, DeskStoreContract):
    pass
