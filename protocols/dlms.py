"""What a gateway needs to reach a DLMS head-end (`[[head_ends]] kind = "dlms"`), carried in `GatewayInit`.

Plain data (no dlms-cosem import): the gateway builds `headend.dlms.DlmsSettings` from it. The LLS
password travels inside the init message (a `Carrier`: its repr is constant, so it is never logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DlmsGatewayOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DlmsGatewayOptions:
    password: str | None = field(default=None, repr=False)
    client_wport: int = 16
    wport_base: int = 256
    address_book: str = ""  # a serial,wport CSV file; empty = wport_base + the serial's trailing digits
    pool_size: int = 64
    response_timeout: float = 3.0
