"""Dead letters are stored and counted, never dropped (DESIGN §5).

`StoredDeadLetterSink` puts each letter into the payment desk's store (the node's one store for
operator queues; SQLite WAL lets the root and the actors write beside the desk) and counts it in
``jodo_dead_letters_total``. The data dir comes from ``JODO_DATA_DIR``, set by whoever starts the
node before the actor system forks; without it the sink only logs and counts.

The stored body is the message's own payload bytes when it carries a batch (msgpack, readable with
the codec), else its pickle: an operator can look at it, and a message can be re-injected by hand.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from typing import Any

from storage.api import DeskStore
from storage.records import DeadLetter
from supervisors.deadletters import DeadLetterEvent, LoggingDeadLetterSink
from telemetry import metrics

__all__ = ["DATA_DIR_ENV", "StoredDeadLetterSink", "body_of", "stored_sink"]

DATA_DIR_ENV = "JODO_DATA_DIR"
log = logging.getLogger("jodo.deadletters")


def body_of(message: object) -> bytes:
    payload = getattr(message, "payload", None)
    if isinstance(payload, bytes):
        return payload
    try:
        return pickle.dumps(message, protocol=5)
    except Exception:  # an unpicklable message is still recorded, by its repr
        return repr(message).encode("utf-8", "replace")


class StoredDeadLetterSink(LoggingDeadLetterSink):
    def __init__(self, data_dir: str | None = None) -> None:
        super().__init__()
        self.data_dir = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
        self._store: DeskStore | None = None

    def record(self, letter: DeadLetterEvent) -> None:
        super().record(letter)
        self.store_letter(source=letter.target or "unknown", message=letter.message,
                          reason=f"{letter.kind.value}: {letter.details.strip()[-2000:]}")

    def store_letter(self, *, source: str, message: Any, reason: str) -> None:
        """Store one letter and count it; never raises (a raise would re-run the caller's handler)."""
        try:
            metrics.dead_letter(source if source in _KINDS else "other")
        except Exception:
            log.debug("dead letter metric failed", exc_info=True)
        if not self.data_dir:
            return
        try:
            if self._store is None:
                from actors.stores import open_desk

                self._store = open_desk(self.data_dir)
            self._store.put_dead_letters([
                DeadLetter(source=source, message_type=type(message).__name__, reason=reason or "-",
                           at=int(time.time()), body=body_of(message))
            ])
        except Exception:
            log.exception("could not store a dead letter (%s); it is logged above", type(message).__name__)


_KINDS = frozenset({"MeterShard", "PaymentDesk", "HeadEndGateway", "Supervisor", "RootSupervisor"})


def stored_sink() -> StoredDeadLetterSink:
    """Factory named in ``SupervisorInit.dead_letter_sink``: ``"actors.deadletters:stored_sink"``."""
    return StoredDeadLetterSink()
