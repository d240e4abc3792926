"""Messages of the jodo actors themselves: their init messages, meter command batches, the clock,
queries and fault injection. All are Thespian-carried (`Carrier`: O(1) str); bulky contents travel as
codec-encoded bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.cim import CimGatewayOptions
from protocols.dlms import DlmsGatewayOptions
from protocols.wire import BatchCarrier, Carrier

__all__ = [
    "ClockSet",
    "CrashActor",
    "DeskFlush",
    "DeskInit",
    "DeskStatus",
    "DeskStatusQuery",
    "GatewayInit",
    "GatewayStatus",
    "GatewayStatusQuery",
    "MeterCommandBatch",
    "MeterCommandBatchResult",
    "MeterQuery",
    "MeterSerialsFound",
    "MeterSerialsQuery",
    "MeterView",
    "PaymentTraceQuery",
    "PaymentTraceView",
    "RelayResultsApplied",
    "ShardFlush",
    "ShardInit",
    "ShardLatency",
    "ShardLatencyQuery",
    "ShardStatus",
    "ShardStatusQuery",
]

# ---------------------------------------------------------------- init messages (child spec `init`)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardInit(Carrier):
    """A MeterShard's first message: which group it hosts and where its state lives."""

    group: int
    groups: int
    data_dir: str
    shards: int = 256
    policy_text: str = ""  # TOML overriding the policy defaults ("" = defaults)
    manual_clock: bool = False  # True: time moves only by ClockSet (tests, the demo's month)
    start_at: int = 0  # manual clock's first reading
    tick_seconds: float = 0.5  # how often the timer index and re-sends are looked at
    resend_after_s: int = 30  # re-send a command with no result after this long
    synchronous: str = "full"  # storage durability ("full" or "normal")
    snapshot_every: int = 2_000  # events per logical shard between its snapshots (one shard per tick)
    max_batch: int = 10_000  # meter commands per step (timer sweeps are chunked to this)
    cluster_node: str = ""  # cluster mode: this node's id; the shard is dormant until GroupGrant


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeskInit(Carrier):
    """The PaymentDesk's first message."""

    data_dir: str
    groups: int
    shards: int = 256
    window: int = 8  # unacknowledged CreditBatches per shard group
    max_batch: int = 5_000  # payments per CreditBatch
    max_queued: int = 200_000  # payments waiting for a window before new batches are refused
    synchronous: str = "full"
    manual_clock: bool = False
    start_at: int = 0
    resend_after_s: float = 10.0  # re-send an unacknowledged CreditBatch after this long
    cluster_node: str = ""  # cluster mode: credit only the groups the keeper says (GroupsOwned)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GatewayInit(Carrier):
    """A HeadEndGateway's first message: the head-end it talks to."""

    head_end: str
    host: str
    port: int
    command_timeout: float = 60.0
    max_attempts: int = 4
    rate_limit: float | None = None
    outcome_cache: int = 1_000_000  # final outcomes kept to answer re-sent command ids
    data_dir: str = ""  # where dead letters are stored
    guard: str = ""  # the disconnect guard's policy as JSON (domain/guard.py GuardPolicy); "" = no guard
    dlms: DlmsGatewayOptions | None = None  # set: a DLMS head-end (headend/dlms), else the reference protocol
    cim: CimGatewayOptions | None = None  # set: an IEC 61968-9 CIM head-end (headend/cim)


# ---------------------------------------------------------------- meter commands and time


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterCommandBatch(BatchCarrier):
    """Any meter commands (codec `encode_many`): registrations, bills, overrides, state reports."""

    batch_id: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterSerialsQuery(Carrier):
    """Gateway → every shard group: which of ``serials`` are meters of yours on ``head_end``? (to route
    the head-end's consumption reads, which name meters by serial, to accounts)."""

    request_id: str
    head_end: str
    serials: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterSerialsFound(Carrier):
    """Shard → gateway: (serial, account, prepaid) of each asked serial the group hosts on that
    head-end. ``serving`` False: the group is dormant here (cluster), so it could not say."""

    request_id: str
    group: int
    found: tuple[tuple[str, str, bool], ...] = ()
    serving: bool = True


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterCommandBatchResult(BatchCarrier):
    """Shard → sender, after the journal commit. ``rejected``: (index, reason) per refused command."""

    batch_id: str
    group: int
    accepted: int
    rejected: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardFlush(Carrier):
    """A shard's note to itself: journal what the messages before this one staged (group commit)."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class RelayResultsApplied(Carrier):
    """Shard → gateway: a `RelayResultBatch` is journaled; frees one slot of the gateway's result window
    for that group (results waiting meanwhile leave together in the next batch)."""

    batch_id: str
    group: int


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeskFlush(Carrier):
    """The desk's note to itself: commit what the messages before this one staged (group commit)."""


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ClockSet(Carrier):
    """Manual clock: the time is now ``now`` (epoch seconds); never moves backwards."""

    now: int
    request_id: str = ""


# ---------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterQuery(Carrier):
    request_id: str
    account: str
    history: int = 0  # also return up to this many journal events, newest first


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class MeterView(Carrier):
    """``meter``: the encoded `Meter` (b"" if unknown); ``history``: encoded events, newest first."""

    request_id: str
    account: str
    meter: bytes
    history: bytes = b""
    served: bool = True  # False: this node does not serve the meter's group (cluster: owned elsewhere)


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardStatusQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardStatus(Carrier):
    request_id: str
    group: int
    pid: int
    meters: int
    relay_counts: tuple[tuple[str, int], ...]
    paid_but_disconnected: int
    pending_commands: int
    now: int
    recovery_seconds: float
    journal_heads: int
    queued_commands: int = 0  # relay commands and cancels waiting for a gateway's credit window
    serving: bool = True  # cluster mode: False while this node does not own the group (dormant)
    epoch: int = 0  # cluster mode: the lease epoch it is served under


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeskStatusQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class DeskStatus(Carrier):
    request_id: str
    pid: int
    queued: int
    in_flight_batches: tuple[tuple[int, int], ...]  # (group, unacknowledged batches)
    counts: tuple[tuple[str, int], ...]  # payments by ledger status
    saturated: bool


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GatewayStatusQuery(Carrier):
    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class GatewayStatus(Carrier):
    request_id: str
    head_end: str
    pid: int
    breaker: str
    pending: int
    in_flight: int
    outcomes: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PaymentTraceQuery(Carrier):
    request_id: str
    payment_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class PaymentTraceView(Carrier):
    """The ledger's record of one payment (a JSON-able dict), or None if unknown."""

    request_id: str
    payment_id: str
    record: dict[str, object] | None


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardLatencyQuery(Carrier):
    """Take (and clear) the shard's recent latency samples."""

    request_id: str


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class ShardLatency(Carrier):
    """Seconds from the desk receiving a payment to the connect command leaving this shard, and to
    the relay's connected state being confirmed (read back), one sample per payment."""

    request_id: str
    to_command: tuple[float, ...]
    to_connected: tuple[float, ...]


# ---------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CrashActor(Carrier):
    """Fault injection: the receiving actor raises SystemExit-like death (os._exit) at once."""

    reason: str = "injected"
