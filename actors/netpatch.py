"""Make every Thespian socket bind to the advertised address instead of all interfaces.

Thespian 4.0.1 binds each "external" actor socket to ``('', port)`` (``IPActorAddress.__init__`` in
``thespian/system/transport/IPBase.py`` ends with ``self.bindname = ('', sa[1]) if external else sa``)
and unpickles whatever arrives on it: anyone who can reach a port runs code on the host.
``THESPIAN_BASE_IPADDR`` only changes the address advertised, not the one bound (THESPIAN.md, Security).

`apply_bind_patch` replaces the ``IPActorAddress.bindArgs`` property so an empty or wildcard bind host
becomes the advertised host (``sockname[0]``). Apply it in the process that starts the actor system,
*before* its first ``ActorSystem()``: the admin, the logger and every actor are forked from it and
inherit the patch; a patch applied inside an actor module is too late for the admin and logger.

It patches a private class, so it refuses (`BindPatchError`) unless thespian is exactly the pinned
version and the class still has the shape this patch was written against.

`apply_peer_allowlist` adds a second wall: every connection accepted by an actor socket whose peer
address is not on the list is closed at once, before a byte of it is read (so before anything is
unpickled). The node allows its own bind address and 127.0.0.1 (the source of loopback connections
to any 127/8 address), plus `RuntimeConfig.peers`. A cluster needs nothing more: nodes exchange no
actor traffic (docs/cluster.md), so no other machine ever has a reason to reach an actor port.

Errors::

    BindPatchError      apply_bind_patch: wrong thespian version, changed source, or no
                        THESPIAN_BASE_IPADDR. Do not start a multiproc system: fix the pin or the env.
"""

from __future__ import annotations

import inspect
import os
import socket
from collections.abc import Iterable
from importlib import metadata
from typing import Any

__all__ = [
    "PINNED_THESPIAN",
    "BindPatchError",
    "apply_bind_patch",
    "apply_peer_allowlist",
    "bind_patch_applied",
    "peer_allowlist",
    "verify_thespian",
]

PINNED_THESPIAN = "4.0.1"
_EXPECTED_BINDNAME = "self.bindname = ('', sa[1]) if external else sa"
_EXPECTED_BINDARGS = "def bindArgs(self): return self.bindname,"
_MARK = "_jodo_bind_patched"
_ORIGINAL = "_jodo_original_bindArgs"
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_ALLOWED = "_jodo_allowed_peers"
_ORIGINAL_NEW_SOCKET = "_jodo_original_new_socket"


class BindPatchError(RuntimeError):
    """Raised by `apply_bind_patch` when it cannot prove the patch is right for the installed thespian.

    The caller must not start a multiproc actor system: its sockets would listen on every interface.
    """


def _bind_args(self: Any) -> tuple[tuple[Any, ...]]:
    """Replacement for ``IPActorAddress.bindArgs``: bind where we advertise, never on all interfaces."""
    host = self.bindname[0]
    if host in _WILDCARD_HOSTS:
        host = self.sockname[0]
    return ((host, *self.bindname[1:]),)


def bind_patch_applied() -> bool:
    """Whether this process's thespian binds to the advertised address."""
    from thespian.system.transport import IPBase

    return bool(getattr(IPBase.IPActorAddress, _MARK, False))


def verify_thespian() -> None:
    """Raise `BindPatchError` unless the installed thespian is the one this patch was checked against."""
    from thespian.system.transport import IPBase

    cls = IPBase.IPActorAddress
    _check_shape(cls, getattr(cls, _ORIGINAL, None) or inspect.getattr_static(cls, "bindArgs", None))


def _check_shape(ip_address_class: Any, prop: Any) -> None:
    version = metadata.version("thespian")
    if version != PINNED_THESPIAN:
        raise BindPatchError(
            f"thespian {version} is installed, the bind patch was verified against {PINNED_THESPIAN}:"
            " re-verify IPBase.IPActorAddress and update PINNED_THESPIAN"
        )
    if not isinstance(prop, property) or prop.fget is None:
        raise BindPatchError("IPActorAddress.bindArgs is no longer a property: re-verify the patch")
    try:
        init_src = inspect.getsource(ip_address_class.__init__)
        bindargs_src = inspect.getsource(prop.fget)
    except (OSError, TypeError) as exc:
        raise BindPatchError(f"cannot read thespian's IPBase source to verify it: {exc}") from exc
    if _EXPECTED_BINDNAME not in init_src or _EXPECTED_BINDARGS not in bindargs_src:
        raise BindPatchError(
            "IPActorAddress no longer computes bindname/bindArgs as in thespian 4.0.1: re-verify"
        )


def apply_bind_patch() -> None:
    """Patch thespian in this process (idempotent). Call before the first ``ActorSystem()``.

    Requires ``THESPIAN_BASE_IPADDR``: without it thespian probes for a public address and the
    "advertised" address, hence the bound one, would be that public interface.
    """
    from thespian.system.transport import IPBase

    cls = IPBase.IPActorAddress
    if getattr(cls, _MARK, False):
        return
    if not os.environ.get("THESPIAN_BASE_IPADDR"):
        raise BindPatchError("set THESPIAN_BASE_IPADDR (e.g. 127.0.0.1) before applying the patch")
    original = inspect.getattr_static(cls, "bindArgs", None)
    _check_shape(cls, original)
    setattr(cls, _ORIGINAL, original)
    cls.bindArgs = property(_bind_args)
    setattr(cls, _MARK, True)


def _eof_socket() -> socket.socket:
    """A connected TCP socket whose peer has already hung up: reading it gives EOF at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.close()
    return server


def peer_allowlist() -> frozenset[str] | None:
    """The peer addresses this process's actor sockets accept (None: no allowlist applied)."""
    from thespian.system.transport import TCPTransport

    allowed: frozenset[str] | None = getattr(TCPTransport.TCPTransport, _ALLOWED, None)
    return allowed


def apply_peer_allowlist(addresses: Iterable[str]) -> None:
    """Close every connection an actor socket accepts from a peer not in `addresses` (replacing any
    earlier list). Call in the process that starts the actor system, before ``ActorSystem()``, like
    `apply_bind_patch`; the admin, logger and actors are forked from it and inherit it."""
    from thespian.system.transport import TCPTransport

    cls = TCPTransport.TCPTransport
    if not hasattr(cls, _ORIGINAL_NEW_SOCKET):
        original = cls.new_socket
        setattr(cls, _ORIGINAL_NEW_SOCKET, original)

        def new_socket(self: Any, op: Any, *args: Any, **kw: Any) -> Any:
            result = original(self, op, *args, **kw)
            allowed = getattr(cls, _ALLOWED, None)
            if allowed is not None and getattr(op, "__name__", "") == "accept":
                sock, peer = result
                if peer[0] not in allowed:
                    sock.close()  # nothing was read from it: nothing was unpickled
                    # thespian 4.0.1's admin crashes on an accept that raises (its run loop takes the
                    # UpdateWork it queues for an envelope), so hand it a connection already at EOF
                    return _eof_socket(), peer
            return result

        cls.new_socket = new_socket
    setattr(cls, _ALLOWED, frozenset(addresses))
