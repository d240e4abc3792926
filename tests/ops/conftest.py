"""The ops tier: deploy/ checked with the real tools. Helpers and the ``tool`` fixture: ops_tools.py."""

from __future__ import annotations

from ops_tools import tool

__all__ = ["tool"]
