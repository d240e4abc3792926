"""The front door's readiness across an injected crash (jodo/backend.py, no actors: a fake tree).

A crash is told to the child and answered at once; the supervisor restarts it a moment later. Between
the two, the tree may still look ready (the old child listed, or the new one not yet), so readiness must
not come from the tree alone: /readyz is 503 from the crash until that child runs under a new pid.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from jodo.backend import ActorBackend


def tree(pid: int | None, *, ready: bool = True) -> Any:
    child = SimpleNamespace(id="shard-1", pid=pid, address=None if pid is None else f"addr-{pid}")
    supervisor = SimpleNamespace(status=SimpleNamespace(children=[child]))
    return SimpleNamespace(ready=ready, supervisors=lambda: [supervisor])


class Client:
    def __init__(self, pid: int | None) -> None:
        self.tree = tree(pid)
        self.told: list[tuple[Any, Any]] = []
        self.node = SimpleNamespace(status=lambda: self.tree)
        self.runtime = SimpleNamespace(tell=lambda address, message: self.told.append((address, message)))
        self.refreshed = 0
        self.desk: Any = None
        self.shard: dict[int, Any] = {}
        self.gateway: dict[str, Any] = {}

    def refresh(self, _tree: Any) -> None:
        self.refreshed += 1


def backend() -> ActorBackend:
    return ActorBackend(lambda: None, groups=2)  # type: ignore[arg-type,return-value]


def test_not_ready_from_the_crash_until_the_child_runs_under_a_new_pid() -> None:
    b, client = backend(), Client(pid=100)
    b._health(client)  # type: ignore[arg-type]
    assert b.ready()
    answer = b._crash(client, "shard-1")  # type: ignore[arg-type]
    assert answer["pid"] == 100 and len(client.told) == 1
    assert not b.ready()  # at once, before any health check
    b._health(client)  # type: ignore[arg-type]  # the old child still listed, the tree says ready
    assert not b.ready()
    client.tree = tree(None)  # restarting: no address yet
    b._health(client)  # type: ignore[arg-type]
    assert not b.ready()
    client.tree = tree(101)
    b._health(client)  # type: ignore[arg-type]
    assert b.ready()
    client.tree = tree(101, ready=False)  # after that, the tree alone decides again
    b._health(client)  # type: ignore[arg-type]
    assert not b.ready()


def test_a_child_that_never_comes_back_stops_holding_readiness_after_the_wait(monkeypatch: Any) -> None:
    b, client = backend(), Client(pid=100)
    b._crash(client, "shard-1")  # type: ignore[arg-type]
    monkeypatch.setattr("jodo.backend._RESTART_WAIT_S", 0.0)
    b._restarting = ("shard-1", 100, 0.0)  # the wait is over
    b._health(client)  # type: ignore[arg-type]
    assert b.ready() and b._restarting is None
