"""Registers every record of the meter core with the codec, so the journal, snapshots and the wire
can carry them. Importing `protocols` runs this; domain/ itself never imports the codec.

`MeterProfile` decodes through `domain.state.meter_profile`, which interns it: a million meters
restored from a snapshot share a few hundred profile objects, as they did before the restart.
"""

from __future__ import annotations

from typing import Any

from domain import MESSAGE_TYPES
from domain.state import MeterProfile, meter_profile
from protocols.codec import message

__all__ = ["register_domain"]

_done = False


def _profile(**f: Any) -> MeterProfile:
    # positional, as domain/ calls it: lru_cache keys keyword calls apart from positional ones
    return meter_profile(f["head_end"], f["install_year"], f["relay_capable"], f["control_mode"])


def register_domain() -> None:
    """Register the meter core's records (idempotent)."""
    global _done
    if _done:
        return
    for cls in MESSAGE_TYPES:
        message(cls, factory=_profile if cls is MeterProfile else None)
    _done = True


register_domain()
