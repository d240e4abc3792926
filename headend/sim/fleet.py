"""A fleet of meters with DLMS class-70 (Disconnect control) semantics, three bytes per meter.

Serials are ``<prefix><index, zero-padded to width>`` (``MPW00000042``), so a serial maps to an index
without a dictionary; `Fleet.from_serials` takes arbitrary serials (for small test fleets) at the cost
of one. Per meter: control_state (0 disconnected, 1 connected, 2 ready_for_reconnection) and
control_mode (0-6) in bytearrays; output_state (the relay) is closed exactly when connected.

Transitions (IEC 62056-6-2 §4.5.8, Blue Book table; see research/domain.md §1.1):
remote_disconnect: 1→0 (b), 2→0 (c); not permitted in mode 0.
remote_reconnect: 0→1 (a) in modes 2 and 4; 0→2 (d) in modes 1, 3, 5, 6; mode 0 is always connected.
button (manual): 2→1 (e) in modes 1-6; 1→2 (f) in modes 1, 2, 5.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from protocols.headend import HesAction, HesControlState, HesErrorCode, HesMeterState

__all__ = ["Fleet", "button_transition", "remote_transition"]

_DIRECT_RECONNECT_MODES = frozenset({2, 4})
_MANUAL_DISCONNECT_MODES = frozenset({1, 2, 5})
_DISCONNECTED, _CONNECTED, _READY = 0, 1, 2


_A_READ, _A_DISCONNECT = HesAction.READ, HesAction.DISCONNECT  # bound once: enum lookups are slow


def remote_transition(control_state: int, mode: int, action: HesAction) -> tuple[int, str | None]:
    """The control_state after a remote action, and an error code if the meter refuses it."""
    if action is _A_READ:
        return control_state, None
    if action is _A_DISCONNECT:
        if mode == 0:
            return control_state, HesErrorCode.NOT_PERMITTED
        return _DISCONNECTED, None
    if mode == 0 or control_state != _DISCONNECTED:
        return control_state, None  # already connected, or waiting for the button: unchanged
    return (_CONNECTED if mode in _DIRECT_RECONNECT_MODES else _READY), None


def button_transition(control_state: int, mode: int) -> int:
    """The control_state after the consumer presses the meter's button."""
    if mode == 0:
        return control_state
    if control_state == _READY:
        return _CONNECTED
    if control_state == _CONNECTED and mode in _MANUAL_DISCONNECT_MODES:
        return _READY
    return control_state


class Fleet:
    """Meters' true relay states. Not thread-safe: one owner (the simulator's loop) mutates it."""

    def __init__(
        self,
        size: int,
        *,
        prefix: str = "MPW",
        width: int = 8,
        modes: Sequence[tuple[int, float]] = ((2, 1.0),),
        disconnected_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        if size < 0 or size >= 10**width:
            raise ValueError(f"size must fit in {width} digits")
        if not modes or any(not 0 <= m <= 6 or w < 0 for m, w in modes) or sum(w for _, w in modes) <= 0:
            raise ValueError("modes: (mode 0-6, weight ≥ 0) pairs with a positive total")
        if not 0.0 <= disconnected_fraction <= 1.0:
            raise ValueError("disconnected_fraction must be in [0, 1]")
        self.size = size
        self.prefix = prefix
        self.width = width
        self._prefix_len = len(prefix)
        self._serial_len = len(prefix) + width
        self._by_serial: dict[str, int] | None = None
        self._serials: list[str] | None = None
        if len(modes) == 1:
            self.control_mode = bytearray([modes[0][0]]) * size
        else:
            rng = random.Random(f"{seed}:modes")
            picked = rng.choices([m for m, _ in modes], [w for _, w in modes], k=size)
            self.control_mode = bytearray(picked)
        if disconnected_fraction <= 0.0:
            self.control_state = bytearray([_CONNECTED]) * size
        else:
            rng = random.Random(f"{seed}:states")
            f = disconnected_fraction
            self.control_state = bytearray(
                _DISCONNECTED if mode != 0 and rng.random() < f else _CONNECTED
                for mode in self.control_mode
            )

    @classmethod
    def from_serials(
        cls, serials: Iterable[str], *, mode: int = 2, control_state: int = _CONNECTED
    ) -> Fleet:
        """A fleet of the given serials, all in one mode and state (mode 0 forces connected)."""
        listed = list(dict.fromkeys(serials))
        fleet = cls(len(listed), modes=((mode, 1.0),), width=max(8, len(str(len(listed)))))
        fleet._serials = listed
        fleet._by_serial = {s: i for i, s in enumerate(listed)}
        if mode != 0:
            fleet.control_state = bytearray([control_state]) * len(listed)
        return fleet

    def serial(self, index: int) -> str:
        if self._serials is not None:
            return self._serials[index]
        return f"{self.prefix}{index:0{self.width}d}"

    def index(self, serial: str) -> int | None:
        """The meter's index, or None if the fleet has no such meter."""
        if self._by_serial is not None:
            return self._by_serial.get(serial)
        if len(serial) != self._serial_len or not serial.startswith(self.prefix):
            return None
        digits = serial[self._prefix_len :]
        if not digits.isascii() or not digits.isdigit():  # isdigit alone takes "²" and "٣"
            return None
        i = int(digits)
        return i if i < self.size else None

    def _require(self, serial: str) -> int:
        i = self.index(serial)
        if i is None:
            raise KeyError(serial)
        return i

    def state(self, serial: str) -> HesMeterState:
        """The meter's true relay; all-None state fields for an unknown serial."""
        i = self.index(serial)
        if i is None:
            return HesMeterState(serial, None, None, None)
        cs = self.control_state[i]
        return HesMeterState(serial, HesControlState(cs), cs == _CONNECTED, self.control_mode[i])

    def apply(self, index: int, action: HesAction) -> tuple[int, str | None]:
        """Execute a remote action on meter `index`; returns its control_state after, and any error."""
        cs, error = remote_transition(self.control_state[index], self.control_mode[index], action)
        self.control_state[index] = cs
        return cs, error

    def press_button(self, serial: str) -> HesMeterState:
        i = self._require(serial)
        self.control_state[i] = button_transition(self.control_state[i], self.control_mode[i])
        return self.state(serial)

    def set_control_mode(self, serial: str, mode: int) -> None:
        if not 0 <= mode <= 6:
            raise ValueError("control mode is 0-6")
        i = self._require(serial)
        self.control_mode[i] = mode
        if mode == 0:
            self.control_state[i] = _CONNECTED

    def set_control_state(self, serial: str, state: HesControlState) -> None:
        i = self._require(serial)
        if self.control_mode[i] == 0 and state != HesControlState.CONNECTED:
            raise ValueError("a mode-0 meter is always connected")
        self.control_state[i] = int(state)

    def count(self, state: HesControlState) -> int:
        return self.control_state.count(int(state))
