"""The gateway's result window towards each shard group, driven by hand (no actor system, no socket).

Thespian's TCP transport sends one message per target at a time: results beyond the window wait in
the gateway and leave together as one batch (one shard commit) instead of queueing as many small ones.
"""

from __future__ import annotations

import time
from typing import Any

from actors.gateway import RESULT_ACK_TIMEOUT, RESULT_WINDOW, HeadEndGateway
from domain.commands import ReportRelayResult
from domain.enums import RelayResultStatus
from protocols import codec
from protocols.relay import RelayCommandBatch, RelayResultBatch
from protocols.runtime import RelayResultsApplied


class _Driver:
    """Enough of the socket driver for a RelayCommandBatch without commands."""

    def submit(self, commands: object) -> list[object]:
        return []


def gateway() -> tuple[HeadEndGateway, list[tuple[Any, Any]]]:
    g = HeadEndGateway()
    sent: list[tuple[Any, Any]] = []
    g.tell = lambda target, message: sent.append((target, message))  # type: ignore[method-assign]
    g.driver = _Driver()  # type: ignore[assignment]
    return g, sent


def report(i: int) -> ReportRelayResult:
    return ReportRelayResult(account=f"A{i}", command_id=f"A{i}:1", status=RelayResultStatus.PROCESSED)


def batches(sent: list[tuple[Any, Any]]) -> list[tuple[Any, RelayResultBatch]]:
    return [(t, m) for t, m in sent if isinstance(m, RelayResultBatch)]


def accounts(batch: RelayResultBatch) -> list[str]:
    return [r.account for r in codec.decode_many(batch.payload, expect=ReportRelayResult)]


def test_results_beyond_the_window_wait_and_leave_together_when_the_shard_has_journaled_one() -> None:
    g, sent = gateway()
    g.reply_to[0] = "shard-0"
    for i in range(RESULT_WINDOW + 3):
        g.results[0].append(report(i))
        g._send_results()
    out = batches(sent)
    assert [accounts(b) for _, b in out] == [[f"A{i}"] for i in range(RESULT_WINDOW)]
    assert len(g.results[0]) == 3  # waiting, not queued in the transport

    g.receiveMsg_RelayResultsApplied(RelayResultsApplied(batch_id=out[0][1].batch_id, group=0), "shard-0")
    g._send_results()
    out = batches(sent)
    assert len(out) == RESULT_WINDOW + 1
    assert accounts(out[-1][1]) == [f"A{i}" for i in range(RESULT_WINDOW, RESULT_WINDOW + 3)]
    assert g.results[0] == []


def test_a_restarted_shard_is_not_held_by_the_window_of_the_one_before() -> None:
    g, sent = gateway()
    g.reply_to[0] = "old-shard-0"
    for i in range(RESULT_WINDOW):
        g.results[0].append(report(i))
        g._send_results()
    g.results[0].append(report(99))
    g._send_results()
    assert len(batches(sent)) == RESULT_WINDOW  # the old shard never answered

    g.receiveMsg_RelayCommandBatch(RelayCommandBatch(batch_id="b", group=0, head_end="hes-1",
                                                     payload=codec.encode_many([])), "new-shard-0")
    g._send_results()
    target, last = batches(sent)[-1]
    assert target == "new-shard-0" and accounts(last) == ["A99"]


def test_an_unanswered_result_batch_stops_holding_the_window_after_the_timeout() -> None:
    g, sent = gateway()
    g.reply_to[1] = "shard-1"
    long_ago = time.monotonic() - RESULT_ACK_TIMEOUT - 1
    g.results_unacked[1] = {f"lost-{i}": long_ago for i in range(RESULT_WINDOW)}
    g.results[1].append(report(7))
    g._send_results()
    assert [accounts(b) for _, b in batches(sent)] == [["A7"]]
