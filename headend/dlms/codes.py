"""DLMS results → the adapter contract's error codes (`protocols.headend.HesErrorCode` and a few more).

The contract (`headend.adapter`) retries only `RETRYABLE_ERRORS` (``no_communication``): a DLMS result
that says "the meter could do it later" maps there; one that says "this meter, this association or
this object will never do it" maps to a final code. Codes (IEC 62056-5-3 Data-Access-Result / Action-
Result, as `dlms_cosem.enumerations` numbers them):

| DLMS result                                   | code                   | retried |
|-----------------------------------------------|------------------------|---------|
| TCP refused / unreachable / timeout, AARE rejected-transient, | no_communication | yes |
| TEMPORARY_FAILURE (2)                         |                        |         |
| HARDWARE_FAULT (1) on remote_(dis)connect     | relay_stuck            | no      |
| READ_WRITE_DENIED (3)                         | not_permitted          | no      |
| SCOPE_OF_ACCESS_VIOLATED (13)                 | access_denied          | no      |
| OBJECT_UNDEFINED (4), OBJECT_CLASS_INCONSISTENT (9), OBJECT_UNAVAILABLE (11) | no_disconnector | no |
| AARE rejected-permanent (wrong password, no such logical device) | association_refused | no |
| anything else                                 | dlms_<name>            | no      |

READ_WRITE_DENIED is what a meter answers when control_mode forbids the transition (mode 0 has no
remote disconnect): the same final ``not_permitted`` the reference protocol reports.
"""

from __future__ import annotations

from protocols.headend import HesErrorCode

__all__ = [
    "ACCESS_DENIED",
    "ASSOCIATION_REFUSED",
    "NO_DISCONNECTOR",
    "code_for_result",
]

ASSOCIATION_REFUSED = "association_refused"
ACCESS_DENIED = "access_denied"
NO_DISCONNECTOR = "no_disconnector"

_BY_RESULT: dict[int, str] = {
    1: HesErrorCode.RELAY_STUCK,
    2: HesErrorCode.NO_COMMUNICATION,
    3: HesErrorCode.NOT_PERMITTED,
    4: NO_DISCONNECTOR,
    9: NO_DISCONNECTOR,
    11: NO_DISCONNECTOR,
    13: ACCESS_DENIED,
}

_NAMES = {
    12: "type_unmatched", 14: "data_block_unavailable", 15: "long_action_aborted",
    16: "no_long_action_in_progress", 250: "other_reason",
}  # fmt: skip


def code_for_result(result: int) -> str:
    """The contract's error code for a non-success DLMS Action-Result / Data-Access-Result."""
    found = _BY_RESULT.get(result)
    if found is not None:
        return str(found)
    return f"dlms_{_NAMES.get(result, str(result))}"
