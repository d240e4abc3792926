"""IEC 61968-9 (CIM) head-end adapter: `create EndDeviceControls` over SOAP/HTTP, async `EndDeviceEvents`.

Needs the ``cim`` extra (lxml). Importing `headend` does not import this package.

- `messages`: the 61968-100 envelope and payloads, built and parsed with lxml, checked against
  `schema/*.xsd` (a subset written for jodo, not the IEC original)
- `core`: `CimCore`, sans-I/O: requests to send, replies/events/timeouts → exactly one outcome per command
"""

from headend.cim.core import CimCore, CimCoreConfig, CimRequest, CimStats

__all__ = ["CimCore", "CimCoreConfig", "CimRequest", "CimStats"]
