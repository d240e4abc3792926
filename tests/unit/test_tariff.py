"""Prepaid pricing (domain/tariff.py): slab arithmetic by hand, and exact additivity over any split."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.policy import load_policy
from domain.tariff import day_charge, month_duty_paise, month_energy_paise, recharge_warning

POLICY = load_policy("""
[prepaid]
slab_upto_kwh = [50, 150]
slab_paise_per_kwh = [400, 500, 700]
fixed_charge_paise_per_day = 300
duty_bp = 1000
""")


def test_slabs_priced_by_hand() -> None:
    assert month_energy_paise(0, POLICY) == 0
    assert month_energy_paise(50_000, POLICY) == 50 * 400
    assert month_energy_paise(150_000, POLICY) == 50 * 400 + 100 * 500
    assert month_energy_paise(200_000, POLICY) == 50 * 400 + 100 * 500 + 50 * 700
    assert month_energy_paise(1, POLICY) == 0  # 1 Wh x 400 paise/kWh = 0.4 paise, floored
    assert month_energy_paise(2_501, POLICY) == 1_000  # 1000.4 floored


def test_a_day_across_a_slab_boundary_pays_both_rates() -> None:
    charge = day_charge(45_000, 10_000, POLICY)  # 5 kWh at 400, 5 kWh at 500
    assert (charge.energy_paise, charge.fixed_paise, charge.duty_paise) == (4_500, 300, 450)
    assert charge.total_paise == 5_250


def test_recharge_rule_warns_only() -> None:
    assert recharge_warning(50_000, 10_000, POLICY) is None
    assert "multiple" in (recharge_warning(50_050, 10_000, POLICY) or "")
    assert "week" in (recharge_warning(10_000, 20_000, POLICY) or "")
    off = load_policy('[prepaid]\nrecharge_rule = "off"\n')
    assert recharge_warning(1, 10**9, off) is None


@given(st.lists(st.integers(min_value=0, max_value=40_000), max_size=40))
def test_daily_charges_add_up_exactly_to_the_month(days: list[int]) -> None:
    before = energy = duty = 0
    for wh in days:
        c = day_charge(before, wh, POLICY)
        assert c.energy_paise >= 0 and c.duty_paise >= 0
        energy, duty, before = energy + c.energy_paise, duty + c.duty_paise, before + wh
    assert energy == month_energy_paise(before, POLICY)
    assert duty == month_duty_paise(before, POLICY)


def test_defaults_load_and_are_increasing() -> None:
    p = load_policy()
    prices = [month_energy_paise(k * 1000, p) for k in range(0, 400, 10)]
    assert prices == sorted(prices)
