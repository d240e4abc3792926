"""The IEC 62056-47 TCP wrapper: 8-byte header (version 1, source wPort, destination wPort, length).

dlms-cosem has the header (`dlms_cosem.protocol.wrappers.WrapperHeader`) but reads it only from a
blocking socket; this splits a non-blocking byte stream into APDUs.
"""

from __future__ import annotations

import struct

__all__ = ["WRAPPER_VERSION", "WrapperError", "WrapperReader", "wrap"]

WRAPPER_VERSION = 1
_HEADER = struct.Struct(">HHHH")


class WrapperError(ValueError):
    """A header that is not a DLMS wrapper header (version ≠ 1): the stream is out of sync, close it."""


def wrap(source: int, destination: int, apdu: bytes) -> bytes:
    if len(apdu) > 0xFFFF:
        raise ValueError(f"an APDU of {len(apdu)} bytes does not fit a wrapper frame")
    return _HEADER.pack(WRAPPER_VERSION, source, destination, len(apdu)) + apdu


class WrapperReader:
    """Feed bytes as they arrive; `next_apdu` returns (source, destination, apdu) or None."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_apdu(self) -> tuple[int, int, bytes] | None:
        buf = self._buf
        if len(buf) < 8:
            return None
        version, source, destination, length = _HEADER.unpack_from(buf)
        if version != WRAPPER_VERSION:
            raise WrapperError(f"wrapper version {version}, expected {WRAPPER_VERSION}")
        if len(buf) < 8 + length:
            return None
        apdu = bytes(buf[8 : 8 + length])
        del buf[: 8 + length]
        return source, destination, apdu
