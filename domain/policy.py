"""Tariff and disconnection policy: one frozen record, loaded from TOML over the packaged defaults.

Every default lives in ``domain/policy_defaults.toml`` with its source. ``load_policy(text)`` reads the
defaults, overrides them key by key with ``text`` (a list replaces the whole list), checks every value
and returns a `Policy`; an unknown key or a bad value raises `PolicyError` naming ``section.key``.
Money is integer paise, rates integer basis points; amounts computed from rates are floored.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.errors import PolicyError

__all__ = ["WEEKDAYS", "Policy", "load_policy"]

#: Weekday names as the policy spells them; index = ``date.weekday()`` (Monday = 0).
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAX_ATTEMPTS = 20  # 30 s x 2^19 is already six months: more is a typo


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The rules' parameters. Build it with `load_policy`; field ``a_b`` is TOML key ``a.b``."""

    timezone: str
    billing_cashless_rebate_bp: int
    billing_late_surcharge_bp: int
    disconnection_notice_clear_days: int
    disconnection_min_dues_paise: int
    disconnection_reconnection_charge_paise: int
    disconnection_night_start: str
    disconnection_night_end: str
    disconnection_weekdays_off: tuple[str, ...]
    disconnection_holidays: tuple[str, ...]
    reconnection_threshold_paise: int
    relay_command_expiry_seconds: int
    relay_result_grace_seconds: int
    relay_retry_base_seconds: int
    relay_retry_multiplier: int
    relay_max_attempts: int
    rollout_install_year_min: int
    rollout_install_year_max: int
    rollout_head_ends: tuple[str, ...]
    prepaid_slab_upto_kwh: tuple[int, ...]
    prepaid_slab_paise_per_kwh: tuple[int, ...]
    prepaid_fixed_charge_paise_per_day: int
    prepaid_duty_bp: int
    prepaid_low_balance_used_bp: int
    prepaid_low_balance_days_left: int
    prepaid_emergency_credit_paise: int
    prepaid_recharge_multiple_paise: int
    prepaid_recharge_rule: str
    # Not in the repr, which is the snapshot rules' fingerprint (actors/shard_snapshot.py): no count and no
    # timer depends on it but a credit update's, which only meters it applied to have (at worst one check
    # that finds nothing to do), so adding or changing it must not make every snapshot be recounted.
    prepaid_meter_credit_head_ends: tuple[str, ...] = field(repr=False)

    # Derived once here so the hot path never re-parses (not part of equality or the wire form).
    zone: ZoneInfo = field(init=False, repr=False, compare=False)
    holiday_set: frozenset[str] = field(init=False, repr=False, compare=False)
    weekday_off_set: frozenset[int] = field(init=False, repr=False, compare=False)
    #: Minutes after local midnight during which automatic disconnection is allowed, per working day.
    allowed_minutes: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    all_head_ends: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(f"timezone: unknown time zone {self.timezone!r}") from None
        start = _minutes(self.disconnection_night_start, "disconnection.night_start")
        end = _minutes(self.disconnection_night_end, "disconnection.night_end")
        if start == end:
            raise PolicyError("disconnection.night_end: must differ from night_start")
        # The night window [start, end) may cross midnight (18:00-08:00) or sit inside one day.
        allowed = ((end, start),) if start > end else ((0, start), (end, 24 * 60))
        days_off = set()
        for name in self.disconnection_weekdays_off:
            if name not in WEEKDAYS:
                raise PolicyError(f"disconnection.weekdays_off: {name!r} is not one of {WEEKDAYS}")
            days_off.add(WEEKDAYS.index(name))
        if len(days_off) == 7:
            raise PolicyError("disconnection.weekdays_off: every day is off, nothing could be disconnected")
        for day in self.disconnection_holidays:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise PolicyError(f"disconnection.holidays: {day!r} is not an ISO date") from None
        derived = {
            "zone": zone,
            "holiday_set": frozenset(self.disconnection_holidays),
            "weekday_off_set": frozenset(days_off),
            "allowed_minutes": tuple(a for a in allowed if a[0] < a[1]),
            "all_head_ends": "*" in self.rollout_head_ends,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def _key(field_name: str) -> str:
    section, _, rest = field_name.partition("_")
    return field_name if field_name == "timezone" else f"{section}.{rest}"


def _check_types(p: Policy) -> None:
    for name, expected in _FIELD_TYPES.items():
        value = getattr(p, name)
        if expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected is _INTS:
            ok = isinstance(value, tuple) and all(type(v) is int for v in value)
        elif expected is str:
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        if not ok:
            what = {int: "an integer", str: "a string", _INTS: "a list of integers"}.get(
                expected, "a list of strings")
            raise PolicyError(f"{_key(name)}: expected {what}, got {value!r}")


def _check_ranges(p: Policy) -> None:
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise PolicyError(f"{_key(name)}: {what}, got {getattr(p, name)!r}")

    for name in ("billing_cashless_rebate_bp", "billing_late_surcharge_bp"):
        need(0 <= getattr(p, name) <= 10_000, name, "must be 0..10000 basis points")
    for name in (
        "disconnection_notice_clear_days",
        "disconnection_min_dues_paise",
        "disconnection_reconnection_charge_paise",
    ):
        need(getattr(p, name) >= 0, name, "must not be negative")
    need(
        p.reconnection_threshold_paise < p.disconnection_min_dues_paise,
        "reconnection_threshold_paise",
        "must be below disconnection.min_dues_paise (else a meter would flap)",
    )
    need(p.relay_command_expiry_seconds >= 1, "relay_command_expiry_seconds", "must be >= 1")
    need(p.relay_result_grace_seconds >= 0, "relay_result_grace_seconds", "must not be negative")
    need(p.relay_retry_base_seconds >= 1, "relay_retry_base_seconds", "must be >= 1")
    need(p.relay_retry_multiplier >= 1, "relay_retry_multiplier", "must be >= 1")
    need(1 <= p.relay_max_attempts <= _MAX_ATTEMPTS, "relay_max_attempts", f"must be 1..{_MAX_ATTEMPTS}")
    need(
        p.rollout_install_year_min <= p.rollout_install_year_max,
        "rollout_install_year_max",
        "must not be before install_year_min",
    )
    need(
        bool(p.rollout_head_ends) and all(p.rollout_head_ends),
        "rollout_head_ends",
        'must be a non-empty list of head-end names (or ["*"])',
    )

    _check_prepaid(p, need)


def _check_prepaid(p: Policy, need: Any) -> None:
    upto, rates = p.prepaid_slab_upto_kwh, p.prepaid_slab_paise_per_kwh
    need(all(a < b for a, b in pairwise(upto)) and all(u > 0 for u in upto),
         "prepaid_slab_upto_kwh", "must be increasing positive kWh per month")
    need(len(rates) == len(upto) + 1 and all(r >= 0 for r in rates), "prepaid_slab_paise_per_kwh",
         "must have one rate per slab (one more than slab_upto_kwh: the last slab is open), each >= 0")
    for name in ("prepaid_fixed_charge_paise_per_day", "prepaid_low_balance_days_left",
                 "prepaid_emergency_credit_paise", "prepaid_recharge_multiple_paise"):
        need(getattr(p, name) >= 0, name, "must not be negative")
    for name in ("prepaid_duty_bp", "prepaid_low_balance_used_bp"):
        need(0 <= getattr(p, name) <= 10_000, name, "must be 0..10000 basis points")
    need(p.prepaid_recharge_rule in ("off", "warn"), "prepaid_recharge_rule",
         'must be "off" or "warn" (a payment a gateway has taken is never refused)')


def _minutes(hhmm: str, key: str) -> int:
    match = _HHMM.match(hhmm)
    if match is None:
        raise PolicyError(f'{key}: expected local time "HH:MM", got {hhmm!r}')
    return int(match.group(1)) * 60 + int(match.group(2))


_INTS = tuple[int, ...]  # marker: a list of integers
_FIELD_TYPES: dict[str, Any] = {
    "timezone": str,
    "billing_cashless_rebate_bp": int,
    "billing_late_surcharge_bp": int,
    "disconnection_notice_clear_days": int,
    "disconnection_min_dues_paise": int,
    "disconnection_reconnection_charge_paise": int,
    "disconnection_night_start": str,
    "disconnection_night_end": str,
    "disconnection_weekdays_off": tuple,
    "disconnection_holidays": tuple,
    "reconnection_threshold_paise": int,
    "relay_command_expiry_seconds": int,
    "relay_result_grace_seconds": int,
    "relay_retry_base_seconds": int,
    "relay_retry_multiplier": int,
    "relay_max_attempts": int,
    "rollout_install_year_min": int,
    "rollout_install_year_max": int,
    "rollout_head_ends": tuple,
    "prepaid_slab_upto_kwh": _INTS,
    "prepaid_slab_paise_per_kwh": _INTS,
    "prepaid_fixed_charge_paise_per_day": int,
    "prepaid_duty_bp": int,
    "prepaid_low_balance_used_bp": int,
    "prepaid_low_balance_days_left": int,
    "prepaid_emergency_credit_paise": int,
    "prepaid_recharge_multiple_paise": int,
    "prepaid_recharge_rule": str,
    "prepaid_meter_credit_head_ends": tuple,
}
_FIELD_BY_KEY = {_key(name): name for name in _FIELD_TYPES}


def _flatten(doc: dict[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, dict):
                    raise PolicyError(f"{name}.{sub}: unknown policy section ({origin})")
                flat[f"{name}.{sub}"] = inner
        else:
            flat[name] = value
    for key in flat:
        if key not in _FIELD_BY_KEY:
            raise PolicyError(f"{key}: unknown policy key ({origin})")
    return flat


def _parse(text: str, origin: str) -> dict[str, Any]:
    try:
        return _flatten(tomllib.loads(text), origin)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{origin}: not valid TOML: {exc}") from None


def default_policy_text() -> str:
    """The packaged defaults, with their source comments."""
    return resources.files("domain").joinpath("policy_defaults.toml").read_text(encoding="utf-8")


def _plain(value: Any) -> Any:
    """TOML lists become tuples; bare TOML dates (holidays = [2025-01-26]) become ISO strings."""
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value.isoformat() if isinstance(value, date) else value


def load_policy(toml_text: str | None = None) -> Policy:
    """The packaged defaults, overridden by ``toml_text`` if given. Raises `PolicyError`."""
    values = _parse(default_policy_text(), "policy_defaults.toml")
    if toml_text is not None:
        values.update(_parse(toml_text, "policy override"))
    missing = sorted(set(_FIELD_BY_KEY) - set(values))
    if missing:
        raise PolicyError(f"{missing[0]}: missing from policy_defaults.toml")
    kwargs = {_FIELD_BY_KEY[key]: _plain(value) for key, value in values.items()}
    return Policy(**kwargs)
