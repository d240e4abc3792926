"""Relay command traffic between meter shards and head-end gateways.

Shard → gateway: `RelayCommandBatch` (encoded `SendRelayCommand` / `CancelRelayCommand` effects);
the gateway answers `RelayBatchReceived` at once (the shard's credit window) and, later, sends
`RelayResultBatch` (encoded `ReportRelayResult` commands) to the group's latest known address.
A shard re-sends every command still pending after a restart or a gateway's restart; the gateway
deduplicates on command_id, so a re-send never runs a command twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.wire import Carrier

__all__ = ["RelayBatchReceived", "RelayCommandBatch", "RelayResultBatch"]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RelayCommandBatch(Carrier):
    """Commands for one head-end from one shard group."""

    batch_id: str
    group: int
    head_end: str
    payload: bytes
    count: int = 0
    now: int = 0  # the shard's clock when sent: expiries are relative to it (a manual clock may lead)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RelayBatchReceived(Carrier):
    """Gateway → shard: the batch is in the gateway's queue (not yet executed)."""

    batch_id: str
    head_end: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RelayResultBatch(Carrier):
    """Gateway → shard: final outcomes, as encoded `ReportRelayResult` meter commands."""

    batch_id: str
    head_end: str
    payload: bytes
    count: int = 0
