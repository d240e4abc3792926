"""Prepaid pricing (issue 16): what one day's consumption costs, in integer paise, from policy data.

Energy is priced by monthly slabs over the month-to-date energy, so a day's charge is the difference
of two month-to-date totals: ``month_energy_paise(before + wh) - month_energy_paise(before)``. Totals
are floored once, at the total, so the days' charges add up *exactly* to the month's total however the
month is split into reads (and whatever order they are priced in, as long as each is priced against
the energy before it). Duty is the same: floored on the month-to-date energy charge, differenced.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.policy import Policy

__all__ = ["DayCharge", "day_charge", "month_duty_paise", "month_energy_paise", "month_parts",
           "recharge_warning"]


@dataclass(frozen=True, slots=True)
class DayCharge:
    energy_paise: int
    fixed_paise: int
    duty_paise: int

    @property
    def total_paise(self) -> int:
        return self.energy_paise + self.fixed_paise + self.duty_paise


def month_energy_paise(month_wh: int, policy: Policy) -> int:
    """The energy charge of ``month_wh`` watt-hours used in one month, floored to the paisa."""
    if month_wh < 0:
        raise ValueError(f"month_wh must be >= 0, got {month_wh}")
    milli = 0  # paise x 1000 (Wh x paise/kWh)
    lower = 0
    for upto_kwh, rate in zip(policy.prepaid_slab_upto_kwh, policy.prepaid_slab_paise_per_kwh, strict=False):
        upper = upto_kwh * 1000
        if month_wh <= lower:
            break
        milli += (min(month_wh, upper) - lower) * rate
        lower = upper
    if month_wh > lower and len(policy.prepaid_slab_paise_per_kwh) > len(policy.prepaid_slab_upto_kwh):
        milli += (month_wh - lower) * policy.prepaid_slab_paise_per_kwh[-1]
    return milli // 1000


def month_duty_paise(month_wh: int, policy: Policy) -> int:
    return month_energy_paise(month_wh, policy) * policy.prepaid_duty_bp // 10_000


def month_parts(month_wh: int, days: int, policy: Policy) -> tuple[int, int, int]:
    """(energy, fixed, duty) of a month in which ``days`` days used ``month_wh`` (the energy priced once)."""
    energy = month_energy_paise(month_wh, policy)
    return energy, days * policy.prepaid_fixed_charge_paise_per_day, energy * policy.prepaid_duty_bp // 10_000


def day_charge(month_wh_before: int, wh: int, policy: Policy, *, days: int = 1) -> DayCharge:
    """The charge for ``wh`` used after ``month_wh_before`` this month, plus ``days`` fixed charges."""
    if wh < 0 or days < 0:
        raise ValueError("wh and days must be >= 0")
    after = month_wh_before + wh
    return DayCharge(
        energy_paise=month_energy_paise(after, policy) - month_energy_paise(month_wh_before, policy),
        fixed_paise=policy.prepaid_fixed_charge_paise_per_day * days,
        duty_paise=month_duty_paise(after, policy) - month_duty_paise(month_wh_before, policy),
    )


def recharge_warning(amount_paise: int, week_average_paise: int, policy: Policy) -> str | None:
    """Why a recharge is off KERC's rule (multiples of Rs 100, at least a week's average), or None.
    Only ever a warning: the money is credited regardless (see policy ``prepaid.recharge_rule``)."""
    if policy.prepaid_recharge_rule == "off":
        return None
    step = policy.prepaid_recharge_multiple_paise
    if step and amount_paise % step:
        return f"recharge of {amount_paise} paise is not a multiple of {step}"
    if amount_paise < week_average_paise:
        return f"recharge of {amount_paise} paise is below a week's average use ({week_average_paise})"
    return None
