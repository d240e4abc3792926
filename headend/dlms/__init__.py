"""DLMS/COSEM head-end adapter (class 70 Disconnect control over the IEC 62056-47 TCP wrapper).

Needs the ``dlms`` extra (dlms-cosem). Importing `headend` does not import this package.

- `settings`: `DlmsSettings` (endpoint, client SAP, LLS password, wPort addressing, pool, timeouts)
- `driver`: `DlmsSocketDriver`, what the gateway drives (the contract core + the bridge + an epoll set)
- `bridge`: `DlmsBridge`, sans-I/O: the core's reference-protocol frames executed over DLMS associations
- `association`: `DlmsAssociation`, one association on dlms-cosem's sans-I/O `DlmsConnection`
- `codes`: DLMS results → the contract's error codes; `wrapper`: the TCP wrapper framing
"""

from headend.dlms.bridge import BridgeStats, DlmsBridge
from headend.dlms.driver import DlmsSocketDriver, dlms_adapter_config
from headend.dlms.settings import DlmsSettings, load_address_book

__all__ = [
    "BridgeStats",
    "DlmsBridge",
    "DlmsSettings",
    "DlmsSocketDriver",
    "dlms_adapter_config",
    "load_address_book",
]
