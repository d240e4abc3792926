"""Errors raised by protocols/: what crosses a process, node or disk boundary failed to parse.

Hierarchy::

    ProtocolError                 base; never raised itself
    ├── CodecError                protocols.codec: bytes are not a valid jodo message
    └── (FrameError)              protocols.headend: head-end wire frames (added there)

Callers that take bytes from outside (sockets, HTTP bodies, files, journal rows) catch the one error of
the decoder they call, reject that input with its message, and carry on: these errors are expected
outcomes of bad input, never bugs.
"""

from __future__ import annotations

__all__ = ["CodecError", "ProtocolError"]


class ProtocolError(Exception):
    """Base of every protocols/ error. Catch a subclass, not this."""


class CodecError(ProtocolError):
    """Raised by `protocols.codec.decode*` for anything malformed.

    Truncated bytes, not msgpack, wrong shape, unknown type tag, a schema version newer than this code
    knows, a field of the wrong type or an absurd size. The message says what and where (type tag and
    field name). The caller rejects the input; nothing was applied.
    """
