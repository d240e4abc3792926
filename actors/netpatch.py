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

Errors::

    BindPatchError      apply_bind_patch: wrong thespian version, changed source, or no
                        THESPIAN_BASE_IPADDR. Do not start a multiproc system: fix the pin or the env.
"""

from __future__ import annotations

import inspect
import os
from importlib import metadata
from typing import Any

__all__ = [
    "PINNED_THESPIAN",
    "BindPatchError",
    "apply_bind_patch",
    "bind_patch_applied",
    "verify_thespian",
]

PINNED_THESPIAN = "4.0.1"
_EXPECTED_BINDNAME = "self.bindname = ('', sa[1]) if external else sa"
_EXPECTED_BINDARGS = "def bindArgs(self): return self.bindname,"
_MARK = "_jodo_bind_patched"
_ORIGINAL = "_jodo_original_bindArgs"
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


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
