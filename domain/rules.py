"""Small pure rules the meter core is built from: eligibility, money arithmetic, DLMS readings.

Money is integer paise; a rate is integer basis points and ``amount * bp // 10_000`` floors.
"""

from __future__ import annotations

from domain.enums import ControlState, RelayAction, RelayState
from domain.policy import Policy
from domain.state import BillState, MeterProfile

__all__ = [
    "BUTTON_CONTROL_MODES",
    "apply_rate",
    "command_outcome",
    "reading_relay",
    "reading_satisfies",
    "rebate_paise",
    "remote_switching_eligible",
    "retry_delay_seconds",
    "surcharge_paise",
]

#: Control modes in which remote_reconnect ends in ready_for_reconnection, so the consumer has to
#: press the button (research §1.1, Gurux DisconnectControl: "control_mode = 1, 3, 5, 6").
BUTTON_CONTROL_MODES = frozenset({1, 3, 5, 6})


def apply_rate(amount_paise: int, rate_bp: int) -> int:
    """``amount x rate``, floored to whole paise (never negative)."""
    return max(amount_paise, 0) * rate_bp // 10_000


def remote_switching_eligible(profile: MeterProfile, policy: Policy) -> bool:
    """May jodo switch this meter through its head-end? (rollout policy, DESIGN §2).

    Phase-1 cohort by install year, an enabled head-end, a relay (IS 15959-3 CT meters have none,
    research §1.2) and a control mode that allows remote operation (mode 0 = never, research §1.1).
    """
    return (
        profile.relay_capable
        and profile.control_mode != 0
        and policy.rollout_install_year_min <= profile.install_year <= policy.rollout_install_year_max
        and (policy.all_head_ends or profile.head_end in policy.rollout_head_ends)
    )


def rebate_paise(bill: BillState, policy: Policy) -> int:
    """Cashless-payment rebate on a bill (MPERC: 0.5 % of the bill for LT domestic)."""
    return apply_rate(bill.amount_paise, policy.billing_cashless_rebate_bp)


def surcharge_paise(bill: BillState, dues_paise: int, policy: Policy) -> tuple[int, int]:
    """(surcharge, base): the surcharge on the bill's unpaid part, which is at most the bill."""
    base = min(bill.amount_paise, max(dues_paise, 0))
    return apply_rate(base, policy.billing_late_surcharge_bp), base


def retry_delay_seconds(attempt: int, policy: Policy) -> int:
    """Backoff after failed attempt ``attempt`` (1-based): base x multiplier^(attempt-1) (OSGP)."""
    return int(policy.relay_retry_base_seconds * policy.relay_retry_multiplier ** (attempt - 1))


def reading_relay(control_state: ControlState, output_state: bool) -> RelayState:
    """What a DLMS read means for the supply. The physical output wins: a relay that is closed
    (output_state true) is connected whatever the control state says; open in
    ready_for_reconnection is awaiting the button; any other open relay is disconnected."""
    if output_state:
        return RelayState.CONNECTED
    if control_state == ControlState.READY_FOR_RECONNECTION:
        return RelayState.AWAITING_BUTTON
    return RelayState.DISCONNECTED


def command_outcome(
    action: RelayAction, control_state: ControlState | None, output_state: bool | None
) -> RelayState | None:
    """The relay state a *processed* command reached, or None if the read-back does not show the
    command's effect: "SUCCESS plus unchanged state" is a failure (research §7.5)."""
    if control_state is None or output_state is None:
        return None
    if action is RelayAction.CONNECT:
        if control_state == ControlState.CONNECTED and output_state:
            return RelayState.CONNECTED
        if control_state == ControlState.READY_FOR_RECONNECTION and not output_state:
            return RelayState.AWAITING_BUTTON
    elif action is RelayAction.DISCONNECT and control_state == ControlState.DISCONNECTED and not output_state:
        return RelayState.DISCONNECTED
    return None


def reading_satisfies(action: RelayAction, relay: RelayState) -> bool:
    """Does a read showing ``relay`` mean a command ``action`` has nothing left to do?"""
    if action is RelayAction.CONNECT:
        return relay in (RelayState.CONNECTED, RelayState.AWAITING_BUTTON)
    return relay is RelayState.DISCONNECTED
