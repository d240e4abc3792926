"""The simulator's knobs, as one frozen value; every random choice derives from `seed`."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from enum import StrEnum

from protocols.headend import DEFAULT_MAX_FRAME_BYTES, HesErrorCode

__all__ = ["DailyReadsMode", "LatencySpec", "OutageMode", "SimConfig", "parse_pairs"]


class OutageMode(StrEnum):
    REFUSE = "refuse"  # stop listening: connects fail with ECONNREFUSED
    CLOSE = "close"  # accept, then close at once


class DailyReadsMode(StrEnum):
    """When the simulator reports each meter's read of a day that ended (headend/sim/reads.py)."""

    OFF = "off"  # never (the library default: tests and benches see no unasked frames)
    WALL = "wall"  # when its own clock passes midnight IST (`jodo hes-sim`, `jodo serve`)
    LAB = "lab"  # only when told the lab clock moved (`jodo serve --lab-clock`, `SimCore.lab_clock`)


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """Command execution latency: ``fixed:S``, ``uniform:A,B``, ``exp:MEAN`` or ``lognormal:MEDIAN,SIGMA``."""

    kind: str = "fixed"
    params: tuple[float, ...] = (0.0,)

    _ARITY = {"fixed": 1, "uniform": 2, "exp": 1, "lognormal": 2}

    def __post_init__(self) -> None:
        if self._ARITY.get(self.kind) != len(self.params):
            raise ValueError(f"latency {self.kind!r} wants {self._ARITY.get(self.kind, '?')} params")
        if any(not math.isfinite(p) or p < 0 for p in self.params):
            raise ValueError("latency parameters are finite and ≥ 0")
        if self.kind == "uniform" and self.params[0] > self.params[1]:
            raise ValueError("uniform:A,B needs A ≤ B")

    @classmethod
    def parse(cls, text: str) -> LatencySpec:
        kind, _, rest = text.partition(":")
        try:
            params = tuple(float(p) for p in rest.split(",")) if rest else ()
        except ValueError:
            raise ValueError(f"bad latency {text!r}") from None
        return cls(kind.strip(), params)

    @property
    def is_zero(self) -> bool:
        return self.kind == "fixed" and self.params[0] == 0.0

    def sample(self, u: float) -> float:
        """The latency for a uniform draw u in [0, 1)."""
        u = min(max(u, 1e-12), 1 - 1e-12)
        p = self.params
        if self.kind == "fixed":
            return p[0]
        if self.kind == "uniform":
            return p[0] + (p[1] - p[0]) * u
        if self.kind == "exp":
            return -p[0] * math.log(1.0 - u)
        return p[0] * math.exp(p[1] * statistics.NormalDist().inv_cdf(u))

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


def parse_pairs(text: str) -> tuple[tuple[str, float], ...]:
    """``a=1,b=2.5`` → (("a", 1.0), ("b", 2.5))."""
    pairs: list[tuple[str, float]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=weight, got {part!r}")
        pairs.append((key.strip(), float(value)))
    return tuple(pairs)


_DEFAULT_FAILURE_MIX: tuple[tuple[str, float], ...] = (
    (HesErrorCode.NO_COMMUNICATION.value, 0.8),
    (HesErrorCode.RELAY_STUCK.value, 0.1),
    (HesErrorCode.LOAD_SIDE_VOLTAGE_PRESENT.value, 0.1),
)
_FAILURE_CODES = frozenset(code for code, _ in _DEFAULT_FAILURE_MIX)


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """See `headend.sim.cli` for what each knob means (the --help text is the reference)."""

    meters: int = 725_000
    serial_prefix: str = "MPW"
    serial_width: int = 8
    seed: int = 0
    modes: tuple[tuple[int, float], ...] = ((2, 1.0),)
    disconnected_fraction: float = 0.0
    latency: LatencySpec = field(default_factory=LatencySpec)
    failure_rate: float = 0.0
    failure_mix: tuple[tuple[str, float], ...] = _DEFAULT_FAILURE_MIX
    misreport_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    reorder_window: float = 0.05
    outages: tuple[tuple[float, float], ...] = ()
    outage_mode: OutageMode = OutageMode.REFUSE
    slow_start: float = 0.0
    rate_limit: float = 0.0
    rate_burst: float = 1.0
    read_rate_limit: float = 0.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_batch: int = 10_000
    server_name: str = "jodo-hes-sim"
    daily_reads: DailyReadsMode = DailyReadsMode.OFF
    load_seed: int | None = None  # headend/sim/load.py's seed for the reads; None: `seed`

    def __post_init__(self) -> None:
        for name in ("failure_rate", "misreport_rate", "drop_rate", "duplicate_rate", "reorder_rate"):
            _rate(name, getattr(self, name))
        _rate("disconnected_fraction", self.disconnected_fraction)
        if self.meters < 0:
            raise ValueError("meters must be ≥ 0")
        unknown = {code for code, _ in self.failure_mix} - _FAILURE_CODES
        if unknown:
            raise ValueError(f"failure_mix: unknown codes {sorted(unknown)}")
        if self.failure_mix and sum(w for _, w in self.failure_mix) <= 0:
            raise ValueError("failure_mix weights must have a positive total")
        if any(s < 0 or d <= 0 for s, d in self.outages):
            raise ValueError("outages: (start ≥ 0, duration > 0) seconds")
        if min(self.reorder_window, self.slow_start, self.rate_limit, self.read_rate_limit) < 0:
            raise ValueError("windows and rates are ≥ 0")
        if self.rate_burst <= 0 or self.max_batch < 1 or self.max_frame_bytes < 1024:
            raise ValueError("rate_burst > 0, max_batch ≥ 1, max_frame_bytes ≥ 1024")

    @property
    def quiet(self) -> bool:
        """No randomness at all: every command runs at once and reports truthfully, exactly once."""
        return (
            self.latency.is_zero
            and self.failure_rate == 0
            and self.misreport_rate == 0
            and self.drop_rate == 0
            and self.duplicate_rate == 0
            and self.reorder_rate == 0
        )
