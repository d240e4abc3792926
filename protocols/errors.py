"""Errors raised by protocols/: what crosses a process, node or disk boundary failed to parse.

Hierarchy::

    ProtocolError                 base; never raised itself
    ├── CodecError                protocols.codec: bytes are not a valid jodo message
    └── FrameError                protocols.headend: a head-end wire frame is malformed or too large

Callers that take bytes from outside (sockets, HTTP bodies, files, journal rows) catch the one error of
the decoder they call, reject that input with its message, and carry on: these errors are expected
outcomes of bad input, never bugs.
"""

from __future__ import annotations

__all__ = ["CodecError", "FrameError", "ProtocolError"]


class ProtocolError(Exception):
    """Base of every protocols/ error. Catch a subclass, not this."""


class CodecError(ProtocolError):
    """Raised by `protocols.codec.decode*` for anything malformed.

    Truncated bytes, not msgpack, wrong shape, unknown type tag, a schema version newer than this code
    knows, a field of the wrong type or an absurd size. The message says what and where (type tag and
    field name). The caller rejects the input; nothing was applied.
    """


class FrameError(ProtocolError):
    """Raised by `protocols.headend` decoding (`decode_frame`, `HesFrameReader.next_frame`).

    Anything malformed ends here and nothing else escapes: truncated or non-msgpack bodies, an unknown
    frame tag, wrong field types or counts, absurd sizes, a length prefix above the frame limit.

    `code` is a `HesErrorCode`-style string (``malformed``, ``unknown_frame``, ``too_large``);
    `batch_id` names the submit it came from when that much could be read. When `fatal` is false the
    stream is still in sync: answer with an error frame and keep the connection. When `fatal` is true
    (a length prefix above the limit) the stream cannot be trusted: send an error frame and close.
    """

    def __init__(
        self, message: str, *, code: str = "malformed", fatal: bool = False, batch_id: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal
        self.batch_id = batch_id
