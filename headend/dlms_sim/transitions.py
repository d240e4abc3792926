"""Class-70 transitions a-h (IEC 62056-6-2 §4.5.8; research/domain.md §1.1) on the simulator's fleet.

Remote (a-d) and manual (e, f) come from `headend.sim.fleet` (the reference simulator's rules, one copy);
local (g, h) — a meter-internal trigger such as a limiter or an exhausted prepaid credit — are here:

- g local_disconnect: connected (1) → ready_for_reconnection (2), in every mode but 0
- h local_reconnect: ready_for_reconnection (2) → connected (1), only in modes 5 and 6
"""

from __future__ import annotations

from headend.sim.fleet import button_transition, remote_transition

__all__ = ["button_transition", "local_disconnect", "local_reconnect", "remote_transition"]

_LOCAL_RECONNECT_MODES = frozenset({5, 6})


def local_disconnect(control_state: int, mode: int) -> int:
    return 2 if mode != 0 and control_state == 1 else control_state


def local_reconnect(control_state: int, mode: int) -> int:
    return 1 if mode in _LOCAL_RECONNECT_MODES and control_state == 2 else control_state
