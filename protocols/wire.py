"""What every message Thespian carries between actors has in common."""

from __future__ import annotations

__all__ = ["BatchCarrier", "Carrier"]


class Carrier:
    """Base of Thespian-carried messages: ``str()`` and ``repr()`` are O(1).

    Thespian formats ``str(message)`` on every send and receive for debug logs it then drops; for a
    dataclass holding a 10 000-record batch that was 64 % of a receiver's CPU (THESPIAN.md). Subclasses
    are dataclasses declared with ``repr=False`` so this one is kept.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    __str__ = __repr__


class BatchCarrier(Carrier):
    """A Carrier answered by batch id: its ``request_id`` is its ``batch_id`` (what asks match on)."""

    __slots__ = ()
    batch_id: str

    @property
    def request_id(self) -> str:
        return self.batch_id
