"""A Thespian actor for test_metrics_thespian.py: records metrics and a log line in its own process."""

from __future__ import annotations

import logging
import os
from typing import Any

from thespian.actors import Actor

from telemetry import metrics

_log = logging.getLogger("jodo.probe")


class MetricsProbe(Actor):  # type: ignore[misc]
    """On "count": counts a payment, holds 5 pending commands, logs with context, replies its pid."""

    def receiveMessage(self, message: Any, sender: Any) -> None:
        if message == "count":
            metrics.process_started("meter_shard")
            metrics.payment_received("razorpay", "accepted")
            metrics.set_relay_commands_pending("hes-a", 5)
            _log.info(
                "counted payment token=%s", "tok_live_secret", extra={"payment_id": "pay_1", "actor": "probe"}
            )
            self.send(sender, os.getpid())
