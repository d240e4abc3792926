"""One journal record per common payment (issue 13): `fuse` what decide emitted, `expand` what was read.

decide emits, for a payment that brings a meter off for dues to the reconnection threshold,
`PaymentApplied`, maybe `DisconnectionNoticeWithdrawn`, `RelayTargetSet` and `RelayCommandIssued`.
A shard journals them as one `PaymentReconnect` (one record to encode, frame and store instead of
three or four); whoever reads the journal for people (history, trace) sees them expanded again.

Lossless by construction: `fuse` replaces a run of events only when ``run == fused.parts()`` holds
field by field (checked below without building the parts), so ``expand_all(fuse_all(x)) == x`` for
every sequence, and `evolve` of the fused record is the fold of its parts (domain/evolve.py): old
journals, with the events one by one, and new ones replay to the same state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from domain.enums import CommandOrigin, RelayAction, RelayTarget
from domain.events import (
    DisconnectionNoticeWithdrawn,
    MeterEvent,
    PaymentApplied,
    PaymentReconnect,
    RelayCommandIssued,
    RelayTargetSet,
)

__all__ = ["expand", "expand_all", "fuse_all", "fuse_shard_events"]


def expand(event: MeterEvent) -> tuple[MeterEvent, ...]:
    """The events one journal record stands for (itself, unless it is fused)."""
    return event.parts() if type(event) is PaymentReconnect else (event,)


def expand_all(events: Iterable[MeterEvent]) -> list[MeterEvent]:
    return [part for e in events for part in expand(e)]


def _fused_at(events: Sequence[MeterEvent], i: int) -> tuple[PaymentReconnect, int] | None:
    """The fused record for the run starting at ``events[i]`` (a `PaymentApplied`) and the index
    after the run, or None when the run is not exactly what `PaymentReconnect.parts` gives."""
    p = events[i]
    assert type(p) is PaymentApplied
    n = len(events)
    j = i + 1
    withdrawn: str | None = None
    if j < n and type(w := events[j]) is DisconnectionNoticeWithdrawn:
        if w.account != p.account or w.at != p.at:
            return None
        withdrawn = w.reason
        j += 1
    if j + 1 >= n:
        return None
    t, c = events[j], events[j + 1]
    if type(t) is not RelayTargetSet or type(c) is not RelayCommandIssued:
        return None
    account, at, cause = p.account, p.at, p.payment_id
    if not (
        t.account == account and t.at == at and t.target is RelayTarget.CONNECTED
        and t.correlation_id == cause and t.reason == c.reason
        and c.account == account and c.at == at and c.action is RelayAction.CONNECT and c.attempt == 1
        and c.correlation_id == cause and c.origin is CommandOrigin.AUTOMATIC and c.engineer_id is None
    ):
        return None
    fused = PaymentReconnect(
        account=account, at=at, payment_id=cause, amount_paise=p.amount_paise, channel=p.channel,
        cashless=p.cashless, paid_at=p.paid_at, dues_after_paise=p.dues_after_paise,
        command_id=c.command_id, expires_at=c.expires_at, reason=c.reason, notice_withdrawn=withdrawn,
    )
    return fused, j + 2


def fuse_all(events: Sequence[MeterEvent]) -> list[MeterEvent]:
    """``events`` with every fusable run replaced by its `PaymentReconnect` (see the module doc)."""
    out: list[MeterEvent] = []
    i, n = 0, len(events)
    while i < n:
        e = events[i]
        if type(e) is PaymentApplied:
            found = _fused_at(events, i)
            if found is not None:
                out.append(found[0])
                i = found[1]
                continue
        out.append(e)
        i += 1
    return out


def fuse_shard_events(events: Sequence[tuple[int, MeterEvent]]) -> list[tuple[int, MeterEvent]]:
    """`fuse_all` over a host step's (logical shard, event) pairs (a run is one meter's: one shard)."""
    plain = [e for _, e in events]
    if not any(type(e) is PaymentApplied for e in plain):
        return list(events)
    out: list[tuple[int, MeterEvent]] = []
    i, n = 0, len(plain)
    while i < n:
        if type(plain[i]) is PaymentApplied:
            found = _fused_at(plain, i)
            if found is not None:
                out.append((events[i][0], found[0]))
                i = found[1]
                continue
        out.append(events[i])
        i += 1
    return out
