"""What a gateway needs to reach a CIM head-end (`[[head_ends]] kind = "cim"`), carried in `GatewayInit`.

Plain data (no lxml import): the gateway builds `headend.cim.driver.CimSettings` from it. The callback
token has repr=False, so it never reaches a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CimGatewayOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CimGatewayOptions:
    url: str  # the head-end's EndDeviceControls endpoint (SOAP over HTTP)
    callback_host: str = "127.0.0.1"  # where jodo's EndDeviceEvents listener binds (in the gateway process)
    callback_port: int = 8470
    callback_url: str = ""  # what the head-end is told (ReplyAddress); "" = http://host:port/cim/events
    token: str = field(default="", repr=False)  # the callback's shared token
    max_batch: int = 500
    callback_timeout: float = 120.0
