"""The pure meter core: state, rules, money and supervision policy.

Imports no thespian and reads no clock: time is always a parameter.

The meter API (``domain.meter``)::

    decide(state, command, now, policy) -> (events, effects)
    evolve(state, event) -> state;  apply_all(state, events) -> state
    handle(state, command, now, policy) -> (state, events, effects)
    next_check_at(state, policy) -> epoch seconds | None

`MESSAGE_TYPES` lists every record class of the meter core (commands, events, effects, state), for
the codec to register: they are frozen, slotted, keyword-only dataclasses with project-unique names.
"""

from __future__ import annotations

from domain import commands, effects, events
from domain.state import (
    BillState,
    DayRead,
    FieldWorkOrder,
    Meter,
    MeterCase,
    MeterCredit,
    MeterProfile,
    PendingRelayCommand,
    PrepaidState,
)

__all__ = ["MESSAGE_TYPES"]

#: Every dataclass the meter core exchanges or stores, in dependency order (nested records first).
MESSAGE_TYPES: tuple[type, ...] = (
    MeterProfile,
    BillState,
    PendingRelayCommand,
    FieldWorkOrder,
    MeterCase,
    DayRead,
    MeterCredit,
    PrepaidState,
    Meter,
    *(getattr(commands, name) for name in commands.__all__ if name != "MeterCommand"),
    *(getattr(events, name) for name in events.__all__ if name != "MeterEvent"),
    *(getattr(effects, name) for name in effects.__all__ if name != "Effect"),
)
