"""Found by `jodo demo --prepaid` (helper prepdemo, session 7): a protected prepaid meter whose balance
reaches zero is never told. docs/prepaid.md ("Notices and the cut at zero") says: at a balance of zero or
below, the `zero` notice first, then - for a meter that is neither protected nor on hold - the cut. The
core (domain/drive.py `_prepaid_retarget`) returns early through `_owed_supply` (protected or on hold)
before the notice. Fixed in session 7: the notice comes before the exemption."""

from __future__ import annotations

from domain.effects import NotifyConsumer
from domain.enums import RelayTarget
from domain.events import LowBalanceNotified
from tests.unit.test_meter_support import Sim, at, of_type

MON = at(2025, 3, 3, 10)  # Monday 10:00, allowed


def test_a_protected_prepaid_meter_at_zero_is_told_but_not_cut() -> None:
    s = Sim().register(MON, protected=True).prepaid(MON, 1_000)
    s.consume(MON + 60, "2025-03-02", 20_000)  # well below zero
    assert s.m.dues_paise > 0 and s.m.desired is RelayTarget.CONNECTED and not s.sent()  # holds today
    assert [e.threshold for e in of_type(s.journal, LowBalanceNotified)][-1:] == ["zero"]
    assert [n.ref for n in of_type(s.last_effects, NotifyConsumer)][-1:] == ["zero"]
