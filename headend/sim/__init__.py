"""The head-end simulator: a fleet of DLMS class-70 meters behind the reference protocol.

`SimCore` (sans I/O) decides, `HeadEndSimulator` serves it on asyncio TCP, `SimulatorThread` runs
that on a thread for tests, `cli` is `jodo hes-sim`, `control` inspects one in another process.
"""

from headend.sim.config import LatencySpec, OutageMode, SimConfig
from headend.sim.core import SimCore, SimStats
from headend.sim.fleet import Fleet
from headend.sim.server import HeadEndSimulator, SimulatorThread

__all__ = [
    "Fleet",
    "HeadEndSimulator",
    "LatencySpec",
    "OutageMode",
    "SimConfig",
    "SimCore",
    "SimStats",
    "SimulatorThread",
]
