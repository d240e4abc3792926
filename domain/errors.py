"""Errors raised by the pure meter core.

Hierarchy::

    DomainError                      base of everything domain/ raises on purpose
    ├── PolicyError (ValueError)     load_policy: a policy key is unknown or its value is bad
    └── MeterInvariantError          a meter record or message broke an invariant: a bug, never input

Expected outcomes (unknown account, duplicate payment, result for an old command) are *not* errors:
decide() answers them with effects (AckPayment, MeterCommandRejected) or ignores them.
"""

from __future__ import annotations

__all__ = ["DomainError", "MeterInvariantError", "PolicyError"]


class DomainError(Exception):
    """Base class of the errors domain/ raises."""


class PolicyError(DomainError, ValueError):
    """Raised by `load_policy` (and `Policy` itself) when a key is unknown or a value is invalid.

    The message names the key (``section.key``). The caller should refuse to start with that
    configuration: the defaults are never silently substituted for a bad value.
    """


class MeterInvariantError(DomainError):
    """Raised when a meter state or an event would break an invariant (e.g. a relay state that says
    ``connecting`` with no pending command, or an event for a meter that does not exist).

    It means a bug in decide/evolve or a corrupt journal. The shard actor should let it propagate so
    the supervisor restarts it from storage; retrying the same input will fail the same way.
    """
