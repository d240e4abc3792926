"""Bills, payments, the cashless rebate and the late surcharge (DESIGN §3, research §0)."""

from __future__ import annotations

from test_meter_support import ACCOUNT, DUE_DATE, OVERDUE, POLICY, Sim, at, of_type

from domain.commands import ClearPayment
from domain.effects import AckPayment, NotifyConsumer
from domain.enums import NoticeTemplate, PaymentOutcome
from domain.events import BillPosted, PaymentApplied, RebateGranted, SurchargeApplied
from domain.meter import decide, next_check_at


def billed(amount: int = 100_000) -> Sim:
    return Sim().register(at(2025, 3, 1, 10)).bill(at(2025, 3, 1, 10), amount, DUE_DATE)


def test_bill_adds_its_amount_to_the_dues_and_sets_the_due_date() -> None:
    sim = billed(123_456)
    (posted,) = of_type(sim.last_events, BillPosted)
    assert sim.m.dues_paise == 123_456
    assert posted.due_at == at(2025, 3, 11)  # the whole due date is on time
    assert next_check_at(sim.m, POLICY) == at(2025, 3, 11)


def test_reimported_bill_is_ignored() -> None:
    sim = billed(100_000)
    sim.bill(at(2025, 3, 2), 100_000, DUE_DATE)
    assert sim.last_events == () and sim.last_effects == ()
    assert sim.m.dues_paise == 100_000


def test_the_previous_bill_reimported_after_a_new_one_is_ignored() -> None:
    sim = billed(100_000).bill(at(2025, 4, 1), 70_000, "2025-04-10", bill_id="B2")
    sim.bill(at(2025, 4, 2), 100_000, DUE_DATE, bill_id="B1")
    assert sim.last_events == () and sim.m.dues_paise == 170_000


def test_payment_reduces_dues_and_is_acknowledged_with_a_notice() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5, 12), 40_000, "P1")
    assert sim.m.dues_paise == 60_000
    assert AckPayment(payment_id="P1", account=ACCOUNT, outcome=PaymentOutcome.APPLIED) in sim.last_effects
    (notice,) = of_type(sim.last_effects, NotifyConsumer)
    assert notice.template is NoticeTemplate.PAYMENT_RECEIVED and notice.dues_paise == 60_000


def test_redelivered_payment_is_acknowledged_again_with_no_events() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5, 12), 40_000, "P1")
    sim.pay(at(2025, 3, 5, 13), 40_000, "P1")
    assert sim.last_events == ()
    assert sim.last_effects == (AckPayment(payment_id="P1", account=ACCOUNT, outcome=PaymentOutcome.APPLIED),)
    assert sim.m.dues_paise == 60_000


def test_payment_for_an_unknown_account_is_answered_unknown_account() -> None:
    payment = ClearPayment(
        account="N0", payment_id="P9", amount_paise=100, channel="upi", cashless=True, paid_at=1
    )
    events, effects = decide(None, payment, 10, POLICY)
    assert events == ()
    assert effects == (AckPayment(payment_id="P9", account="N0", outcome=PaymentOutcome.UNKNOWN_ACCOUNT),)


def test_overpayment_leaves_a_credit() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5), 150_000, cashless=False)
    assert sim.m.dues_paise == -50_000


def test_cashless_payment_by_the_due_date_earns_the_rebate_once_per_bill() -> None:
    sim = billed(500_000).pay(at(2025, 3, 10, 23, 59), 500_000, "P1")  # Rs 5,000 on the due date
    (rebate,) = of_type(sim.last_events, RebateGranted)
    assert rebate.amount_paise == 2_500 and rebate.rate_bp == 50  # Rs 25, MPERC example (research §0)
    assert rebate.bill_id == "B1" and rebate.payment_id == "P1"
    assert sim.m.dues_paise == -2_500
    sim.pay(at(2025, 3, 10, 23, 59, 30), 100, "P2")
    assert of_type(sim.last_events, RebateGranted) == []


def test_rebate_is_floored_to_whole_paise() -> None:
    sim = billed(99_999).pay(at(2025, 3, 5), 99_999)
    (rebate,) = of_type(sim.last_events, RebateGranted)
    assert rebate.amount_paise == 499  # 499.995 floored


def test_cash_payment_earns_no_rebate() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5), 100_000, cashless=False)
    assert of_type(sim.last_events, RebateGranted) == []


def test_payment_made_after_the_due_date_earns_no_rebate() -> None:
    sim = billed(100_000).pay(at(2025, 3, 11, 0, 0, 1), 200_000)
    assert of_type(sim.last_events, RebateGranted) == []


def test_payment_made_on_time_but_delivered_late_still_earns_the_rebate() -> None:
    sim = billed(100_000).pay(at(2025, 3, 12), 100_000, paid_at=at(2025, 3, 10, 20))
    assert len(of_type(sim.last_events, RebateGranted)) == 1


def test_a_cashless_payment_after_the_bill_was_settled_in_cash_earns_no_rebate() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5), 100_000, cashless=False)
    sim.pay(at(2025, 3, 6), 500, "P2")
    assert of_type(sim.last_events, RebateGranted) == []


def test_partial_payment_earns_no_rebate() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5), 99_000)
    assert of_type(sim.last_events, RebateGranted) == []


def test_surcharge_is_charged_once_per_bill_on_its_unpaid_part_after_the_due_date() -> None:
    sim = billed(100_000).pay(at(2025, 3, 5), 20_000)
    sim.wake()
    assert sim.now == OVERDUE
    (surcharge,) = of_type(sim.last_events, SurchargeApplied)
    assert surcharge.base_paise == 80_000
    assert surcharge.amount_paise == 80_000 * 125 // 10_000
    dues = sim.m.dues_paise
    sim.check(at(2025, 3, 20))
    assert of_type(sim.last_events, SurchargeApplied) == []
    assert sim.m.dues_paise == dues


def test_surcharge_base_never_exceeds_the_bill() -> None:
    sim = Sim().register(at(2025, 3, 1), opening_dues_paise=1_000_000).bill(at(2025, 3, 1), 10_000, DUE_DATE)
    sim.wake()
    (surcharge,) = of_type(sim.last_events, SurchargeApplied)
    assert surcharge.base_paise == 10_000


def test_bill_paid_by_the_due_date_gets_no_surcharge() -> None:
    sim = billed(100_000).pay(at(2025, 3, 9), 100_000)
    sim.check(at(2025, 3, 12))
    assert of_type(sim.last_events, SurchargeApplied) == []


def test_money_is_integer_paise_in_every_money_event() -> None:
    sim = billed(100_001).pay(at(2025, 3, 5), 33_333).wake()
    for event in sim.journal:
        for name in ("amount_paise", "dues_after_paise", "dues_paise", "base_paise"):
            value = getattr(event, name, 0)
            assert type(value) is int, (event, name)
    assert of_type(sim.journal, PaymentApplied)[0].dues_after_paise == 66_668
