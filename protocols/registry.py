"""Registers every record of the meter core with the codec, so the journal, snapshots and the wire
can carry them. Importing `protocols` runs this; domain/ itself never imports the codec.

`MeterProfile` decodes through `domain.state.meter_profile`, which interns it, and a protected-only
`MeterCase` through its shared instance: a million meters restored from a snapshot share these
objects as they did before the restart.

`METER_PACKING` is how a shard group keeps its meters resident (`domain.shard.Packing`): the flat
form of `protocols.codec.flat_codec`, without the account (the host's key), 50 bytes for a registered
meter. `METER_FLAT.versions` is what a snapshot of packed meters records to be read back safely.
"""

from __future__ import annotations

from typing import Any

from domain import MESSAGE_TYPES
from domain.shard import Packing
from domain.state import PROTECTED_CASE, Meter, MeterCase, MeterProfile, meter_profile
from protocols.codec import FlatCodec, flat_codec, message

__all__ = ["METER_FLAT", "METER_PACKING", "register_domain"]

_done = False


def _profile(**f: Any) -> MeterProfile:
    # positional, as domain/ calls it: lru_cache keys keyword calls apart from positional ones
    return meter_profile(f["head_end"], f["install_year"], f["relay_capable"], f["control_mode"])


def _case(**f: Any) -> MeterCase:
    # a merely protected meter shares one case object, as it did before the restart
    case = MeterCase(**f)
    return PROTECTED_CASE if case == PROTECTED_CASE else case


_FACTORIES = {MeterProfile: _profile, MeterCase: _case}


def register_domain() -> None:
    """Register the meter core's records (idempotent)."""
    global _done
    if _done:
        return
    for cls in MESSAGE_TYPES:
        message(cls, factory=_FACTORIES.get(cls))
    _done = True


register_domain()

#: A meter's flat form without its account (see protocols.codec.FlatCodec).
METER_FLAT: FlatCodec = flat_codec(Meter, key="account")
#: How a shard group keeps its meters resident: packed into bytes.
METER_PACKING = Packing(pack=METER_FLAT.pack, unpack=METER_FLAT.unpack)
