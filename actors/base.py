"""What every jodo actor shares: metrics that never raise, and poison messages kept as dead letters."""

from __future__ import annotations

import gc
import logging
from typing import Any

from actors.deadletters import StoredDeadLetterSink
from protocols.control import Address
from storage.errors import StorageError
from supervisors.child import SupervisedChild
from telemetry import metrics

__all__ = ["JodoActor"]

log = logging.getLogger("jodo.actor")


class JodoActor(SupervisedChild):
    """Base of MeterShard, PaymentDesk and HeadEndGateway."""

    dead_letters: StoredDeadLetterSink | None = None
    _metric_failures: set[str] | None = None

    _tick_failed_at = 0.0

    def tick_failed(self, error: Exception) -> None:
        """A timer tick that failed (the database away, a bug): log it (at most every 10 s), never
        raise. Thespian re-runs a handler that raised, and a re-run tick re-arms its timer twice:
        one outage of the database doubled the ticks of every shard and desk on each failure until
        the actors drowned in wakeups (found by the PostgreSQL-restart cluster test)."""
        import time

        now = time.monotonic()
        if now - self._tick_failed_at >= 10.0:
            self._tick_failed_at = now
            log.warning("%s tick failed (retried on the next tick): %s", type(self).__name__, error,
                        exc_info=not isinstance(error, StorageError))

    def use_data_dir(self, data_dir: str | None) -> None:
        self.dead_letters = StoredDeadLetterSink(data_dir)

    def metric(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``telemetry.metrics.<name>``; a metric failure is logged, never raised."""
        try:
            getattr(metrics, name)(*args, **kwargs)
        except Exception:
            failed = self._metric_failures if self._metric_failures is not None else set()
            self._metric_failures = failed
            if name not in failed:  # loud once per metric and process, then quiet
                failed.add(name)
                log.warning("metric %s%r failed", name, args, exc_info=True)

    def count_process(self) -> None:
        """Count this actor's process as live (at init; `mark_dead` uncounts it), and give the cyclic
        GC a larger young generation: these processes make many short-lived records per batch and
        few cycles (measured in the head-end adapter: 21 → 14 µs of CPU per command)."""
        self.metric("process_started", type(self).__name__)
        if self.runs_in_own_process():
            gc.set_threshold(50_000, 20, 100)

    def sample_memory(self) -> None:
        """This process's resident memory (on the actor's tick)."""
        self.metric("sample_process_memory", type(self).__name__)

    def undecodable(self, msg: Any, error: Exception) -> None:
        """A batch from another jodo actor that does not decode: log it, keep it as a dead letter
        (stored and counted), carry on. Whatever it owed is re-sent from durable state."""
        log.error("%s %s undecodable: %s", type(msg).__name__, getattr(msg, "batch_id", "?"), error)
        sink = self.dead_letters or StoredDeadLetterSink()
        sink.store_letter(source=type(self).__name__, message=msg, reason=f"undecodable: {error}")

    def receiveMsg_PoisonMessage(self, msg: Any, sender: Address) -> None:
        """A message we sent made its receiver raise twice: keep it, count it, carry on.

        Whatever it carried is still owed by durable state (unacknowledged payments, pending
        commands), so the regular re-sends deliver it again once the receiver is healthy.
        """
        poisoned = getattr(msg, "poisonMessage", None)
        details = str(getattr(msg, "details", "") or "")
        log.error("poison message %s: %s", type(poisoned).__name__, details.strip()[-500:])
        sink = self.dead_letters or StoredDeadLetterSink()
        sink.store_letter(source=type(self).__name__, message=poisoned, reason=details)
