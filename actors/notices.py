"""Where consumer notices and field work orders go once journaled: a pluggable sender.

The default writes one JSON object per line to a file under the data dir (what an SMS gateway or a
work-management system would pick up). Delivery is at-least-once: a notice is re-sent after a crash
until its outbox entry is marked done, so a reader deduplicates on ``notice_id``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from domain.effects import CancelWorkOrder, NotifyConsumer, OpenWorkOrder

__all__ = ["FileNoticeSender", "NoticeSender"]


class NoticeSender(Protocol):
    def send(self, notices: Iterable[NotifyConsumer]) -> list[str]:
        """Deliver notices; return the ids delivered."""
        ...

    def work_orders(self, orders: Iterable[OpenWorkOrder | CancelWorkOrder]) -> None: ...


class FileNoticeSender:
    """Appends notices and work orders as JSON lines (flushed per batch, not fsynced: re-sent anyway)."""

    def __init__(self, directory: str | os.PathLike[str], group: int) -> None:
        base = Path(directory)
        base.mkdir(parents=True, exist_ok=True)
        self.notice_path = base / f"notices-{group}.jsonl"
        self.work_order_path = base / f"work-orders-{group}.jsonl"

    def send(self, notices: Iterable[NotifyConsumer]) -> list[str]:
        sent: list[str] = []
        lines = []
        for n in notices:
            lines.append(
                json.dumps(
                    {
                        "notice_id": n.notice_id, "account": n.account, "template": str(n.template),
                        "amount_paise": n.amount_paise, "dues_paise": n.dues_paise, "ref": n.ref,
                        "not_before": n.not_before,
                    }
                )
            )
            sent.append(n.notice_id)
        if lines:
            with self.notice_path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        return sent

    def work_orders(self, orders: Iterable[OpenWorkOrder | CancelWorkOrder]) -> None:
        lines = []
        for o in orders:
            record: dict[str, object] = {
                "work_order_id": o.work_order_id, "account": o.account, "reason": o.reason,
            }
            if isinstance(o, OpenWorkOrder):
                record |= {"type": "open", "action": str(o.action), "meter_serial": o.meter_serial,
                           "correlation_id": o.correlation_id}
            else:
                record["type"] = "cancel"
            lines.append(json.dumps(record))
        if lines:
            with self.work_order_path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
