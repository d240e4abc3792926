"""Head-end systems: adapters that speak to them and a simulator of a meter fleet.

- `adapter`: `HeadEndAdapterCore`, the sans-I/O adapter (reference protocol) and `AdapterConfig`
- `socket_driver`: `HeadEndSocketDriver`, the core on a non-blocking socket (what an actor drives)
- `threaded`: `ThreadedHeadEndClient`, the socket driver on a thread (tests, tools, bench)
- `fake`: `FakeHeadEnd`, in-memory, with hooks (unit tests of other components)
- `port`: `HeadEndDriver`, the surface the socket driver and the fake share
- `outcome`: `HeadEndOutcome`/`OutcomeKind`, one final outcome per command
- `breaker`: the circuit breaker, a pure state machine; `clock`: injectable clocks
- `sim`: the fleet simulator (`jodo hes-sim`)
"""

from headend.adapter import AdapterConfig, AdapterStats, ConnectionPhase, HeadEndAdapterCore, HeadEndStep
from headend.breaker import Breaker, BreakerPhase, BreakerPolicy
from headend.clock import Clock, FastClock, ManualClock, WallClock
from headend.fake import FakeHeadEnd
from headend.outcome import HeadEndOutcome, OutcomeKind
from headend.port import HeadEndDriver
from headend.socket_driver import HeadEndSocketDriver
from headend.threaded import ThreadedHeadEndClient

__all__ = [
    "AdapterConfig",
    "AdapterStats",
    "Breaker",
    "BreakerPhase",
    "BreakerPolicy",
    "Clock",
    "ConnectionPhase",
    "FakeHeadEnd",
    "FastClock",
    "HeadEndAdapterCore",
    "HeadEndDriver",
    "HeadEndOutcome",
    "HeadEndSocketDriver",
    "HeadEndStep",
    "ManualClock",
    "OutcomeKind",
    "ThreadedHeadEndClient",
    "WallClock",
]
