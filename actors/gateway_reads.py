"""A head-end's consumption reads, routed to meters: the gateway's bookkeeping for them, without Thespian.

The head-end names meters by serial; meters live in shard groups by account, and the gateway keeps no
serial → account map (it would cost every meter its serial again; each shard group keeps a compact
serial index instead, `domain/serials.py`). So reads are routed in rounds: the reads
that arrived are held, every shard group is asked which of their serials it hosts
(`MeterSerialsQuery` → `MeterSerialsFound`), and when all have answered (or `ASK_TIMEOUT` passed) each
prepaid meter's reads leave as `ReportConsumption` meter commands (``source`` = the head-end's name) in
`MeterCommandBatch`es of at most `BATCH` to its group — the path every other meter command takes,
decoded untrusted by the shard (`decode_each`), never as a trusted `RelayResultBatch`. Reads that
arrive during a round wait for the next one. At most `WINDOW` batches per group are unanswered.

Outcomes (`jodo_headend_reads_total{outcome}`): ``forwarded`` (sent to the meter's group; the shard
then debits it, or counts it duplicate or rejected in `jodo_prepaid_reads_total`), ``postpaid``
(the meter is not prepaid: ignored, as the shard ignores a read for a postpaid meter — the billing
system bills it), ``unknown_serial`` (no group hosts that serial on this head-end: logged with the
serials), ``unrouted`` (a group did not answer in time or is not served on this node: the read is
dropped; the head-end's read id makes a later re-send safe).
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from domain.commands import ReportConsumption
from protocols import codec
from protocols.headend import HesRead
from protocols.runtime import MeterCommandBatch, MeterSerialsFound, MeterSerialsQuery

__all__ = ["ASK_TIMEOUT", "BATCH", "READ_OUTCOMES", "WINDOW", "ReadsRouter", "RoundEnd"]

ASK_TIMEOUT = 30.0  # seconds for every group to answer a round's question
BATCH = 10_000  # ReportConsumption per MeterCommandBatch (ShardInit.max_batch)
WINDOW = 4  # unanswered batches per group (THESPIAN.md: credit windows, ≲ 10 per target)
BATCH_TIMEOUT = 60.0  # an answer this late is given up (a restarted shard): the slot is freed
READ_OUTCOMES = ("forwarded", "postpaid", "unknown_serial", "unrouted")


@dataclass(slots=True)
class _Round:
    request_id: str
    reads: list[HesRead]
    asked: set[int]
    deadline: float
    found: dict[str, tuple[str, bool, int]] = field(default_factory=dict)  # serial → account, prepaid, group
    silent: set[int] = field(default_factory=set)  # groups that could not say (dormant, or no answer)


@dataclass(frozen=True, slots=True)
class RoundEnd:
    """What one round did, for metrics and the log."""

    counts: dict[str, int]
    unknown: tuple[str, ...]  # the unknown serials (all of them; the log shows the first few)


class ReadsRouter:
    """One head-end's reads on their way to shard groups. Call `add`, `answer`, `tick` with the time;
    each returns the messages to send as (group, message)."""

    def __init__(self, head_end: str) -> None:
        self.head_end = head_end
        self.waiting: list[HesRead] = []
        self.round: _Round | None = None
        self.outbox: dict[int, deque[MeterCommandBatch]] = defaultdict(deque)
        self.unanswered: dict[int, dict[str, float]] = defaultdict(dict)  # group → batch id → sent at
        self.ended: list[RoundEnd] = []  # taken by the gateway after each call

    def add(self, reads: Iterable[HesRead], groups: Iterable[int], now: float) -> list[tuple[int, object]]:
        self.waiting.extend(reads)
        return self._ask(groups, now)

    def answer(self, msg: MeterSerialsFound, groups: Iterable[int], now: float) -> list[tuple[int, object]]:
        r = self.round
        if r is None or msg.request_id != r.request_id or msg.group not in r.asked:
            return []  # a late answer to a round given up
        r.asked.discard(msg.group)
        if not msg.serving:
            r.silent.add(msg.group)
        for serial, account, prepaid in msg.found:
            r.found[serial] = (account, prepaid, msg.group)
        if not r.asked:
            self._finish(r)
        return self._ask(groups, now) + self._send(now)

    def batch_answered(self, group: int, batch_id: str, now: float) -> list[tuple[int, object]]:
        self.unanswered[group].pop(batch_id, None)
        return self._send(now)

    def tick(self, groups: Iterable[int], now: float) -> list[tuple[int, object]]:
        r = self.round
        if r is not None and now >= r.deadline:
            r.silent |= r.asked
            r.asked.clear()
            self._finish(r)
        return self._ask(groups, now) + self._send(now)

    @property
    def busy(self) -> bool:
        """Reads held, a round open, or batches queued: the gateway keeps its tick armed."""
        return bool(self.waiting or self.round or any(self.outbox.values()))

    # ------------------------------------------------------------ rounds

    def _ask(self, groups: Iterable[int], now: float) -> list[tuple[int, object]]:
        if self.round is not None or not self.waiting:
            return []
        asked = set(groups)
        if not asked:
            return []  # no shard group known yet: the reads wait for one
        reads, self.waiting = self.waiting, []
        r = _Round(request_id=uuid.uuid4().hex, reads=reads, asked=asked, deadline=now + ASK_TIMEOUT)
        self.round = r
        serials = tuple(dict.fromkeys(x.serial for x in reads))
        q = MeterSerialsQuery(request_id=r.request_id, head_end=self.head_end, serials=serials)
        return [(g, q) for g in sorted(asked)]

    def _finish(self, r: _Round) -> None:
        self.round = None
        counts = dict.fromkeys(READ_OUTCOMES, 0)
        by_group: dict[int, list[ReportConsumption]] = defaultdict(list)
        unknown: list[str] = []
        for read in r.reads:
            hit = r.found.get(read.serial)
            if hit is None:
                if r.silent:
                    counts["unrouted"] += 1
                else:
                    counts["unknown_serial"] += 1
                    unknown.append(read.serial)
                continue
            account, prepaid, group = hit
            if not prepaid:
                counts["postpaid"] += 1
                continue
            try:
                command = ReportConsumption(
                    account=account, read_id=read.read_id, read_date=read.day, energy_wh=read.energy_wh,
                    register_wh=read.register_wh, source=self.head_end)
            except ValueError:  # the frame decoder checks the same bounds: not expected
                counts["unrouted"] += 1
                continue
            by_group[group].append(command)
            counts["forwarded"] += 1
        for group, commands in by_group.items():
            for k in range(0, len(commands), BATCH):
                self.outbox[group].append(MeterCommandBatch(
                    batch_id=f"reads-{uuid.uuid4().hex}", payload=codec.encode_many(commands[k:k + BATCH])))
        self.ended.append(RoundEnd(counts, tuple(dict.fromkeys(unknown))))

    def _send(self, now: float) -> list[tuple[int, object]]:
        out: list[tuple[int, object]] = []
        for group, queue in self.outbox.items():
            unanswered = self.unanswered[group]
            for batch_id in [b for b, at in unanswered.items() if now - at > BATCH_TIMEOUT]:
                del unanswered[batch_id]
            while queue and len(unanswered) < WINDOW:
                batch = queue.popleft()
                unanswered[batch.batch_id] = now
                out.append((group, batch))
        return out
