"""`DlmsSettings`: where a DLMS head-end (or a meter gateway) listens and how jodo associates with it."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DlmsSettings", "load_address_book"]

MAX_WPORT = 0xFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class DlmsSettings:
    """One DLMS endpoint (IEC 62056-47 TCP wrapper) and the meters behind it.

    A meter is a logical device addressed by its destination wPort: `address_book[serial]` if given,
    else ``wport_base + <the serial's trailing digits>`` (``MPW00000042`` → 256 + 42); a serial that
    maps to no wPort in 1..65535 is an unknown meter (rejected, never sent). Server wPorts 0-255 are
    reserved or management addresses in IEC 62056-47, hence the default base of 256.
    """

    host: str = "127.0.0.1"
    port: int = 4059  # the IANA port for DLMS/COSEM over TCP
    client_wport: int = 16  # 16 = public client; utilities give the HES its own client SAP
    password: str | None = field(default=None, repr=False)  # LLS; never logged
    wport_base: int = 256
    address_book: Mapping[str, int] | None = field(default=None, repr=False)
    pool_size: int = 64  # concurrent associations (TCP connections) at most
    connect_timeout: float = 3.0  # TCP connect + AARQ → AARE
    response_timeout: float = 3.0  # one request → its answer
    idle_release: float = 2.0  # an idle association is released (RLRQ) after this long
    queue_timeout: float = 20.0  # a command not started by then is answered no_communication
    max_batch: int = 1_000  # commands per submit frame from the core
    rate_limit: float = 0.0  # switching commands/s announced to the core; 0 = the core's own limit

    def __post_init__(self) -> None:
        if not 1 <= self.client_wport <= MAX_WPORT or not 0 <= self.wport_base <= MAX_WPORT:
            raise ValueError("client_wport and wport_base must be wrapper port numbers (0-65535)")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        for name in ("connect_timeout", "response_timeout", "idle_release", "queue_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def wport(self, serial: str) -> int | None:
        """The meter's logical device address, or None if it has none (unknown meter)."""
        book = self.address_book
        if book is not None:
            return book.get(serial)
        i = len(serial)
        while i > 0 and serial[i - 1].isdigit():
            i -= 1
        if i == len(serial) or len(serial) - i > 9:
            return None
        w = self.wport_base + int(serial[i:])
        return w if 1 <= w <= MAX_WPORT else None

    def password_bytes(self) -> bytes | None:
        return None if self.password is None else self.password.encode()


def load_address_book(path: Path) -> dict[str, int]:
    """``serial,wport`` rows (a header row ``serial,wport`` is allowed). Raises ValueError naming the line."""
    book: dict[str, int] = {}
    with path.open(newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or (n == 1 and row[0].strip().lower() == "serial"):
                continue
            if len(row) != 2 or not row[1].strip().isdigit() or not 1 <= int(row[1]) <= MAX_WPORT:
                raise ValueError(f"{path}:{n}: expected serial,wport (1-65535), got {row!r}")
            serial = row[0].strip()
            if serial in book:
                raise ValueError(f"{path}:{n}: serial {serial!r} listed twice")
            book[serial] = int(row[1])
    return book
