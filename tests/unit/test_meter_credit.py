"""A prepaid meter that keeps its own credit is told its balance (domain/credit.py, issue 16 item 4)."""

from __future__ import annotations

from domain.commands import ClearPayment
from domain.enums import RelayAction, RelayResultStatus, RelayState
from domain.events import MeterCreditEnded, MeterCreditSent
from domain.meter import handle, next_check_at
from domain.payment_path import handle_batched
from domain.policy import load_policy
from tests.unit.test_meter_support import ACCOUNT, Sim, at, of_type

CREDIT_POLICY = load_policy('[prepaid]\nmeter_credit_head_ends = ["hes-a"]\n')
START = at(2025, 3, 1, 10)


def credit_meter(balance: int = 12_000, **register: object) -> Sim:
    """A prepaid meter of head-end hes-a (which keeps meter credit), its opening balance applied."""
    s = Sim(policy=CREDIT_POLICY).register(START, **register).prepaid(START + 1, balance)
    return answer(s, s.now + 1)


def answer(s: Sim, now: int, status: RelayResultStatus = RelayResultStatus.PROCESSED, *,
           error_code: str | None = None, retryable: bool = False) -> Sim:
    """The head-end's result for the meter's credit update in flight."""
    c = s.m.prepaid.credit if s.m.prepaid is not None else None
    assert c is not None, "no credit update"
    return s.result(now, status, command_id=c.command_id, error_code=error_code, retryable=retryable)


def credits(s: Sim) -> list[tuple[str, int | None]]:
    """(command id, balance) of the credit updates the last command sent."""
    return [(c.command_id, c.balance_paise) for c in s.sent(RelayAction.CREDIT)]


def test_switching_to_prepaid_sends_the_meter_its_opening_balance() -> None:
    s = Sim(policy=CREDIT_POLICY).register(START).prepaid(START + 1, 12_000)
    assert credits(s) == [(f"{ACCOUNT}:k1", 12_000)]
    sent = s.sent(RelayAction.CREDIT)[0]
    assert (sent.head_end, sent.meter_serial, sent.expires_at) == ("hes-a", "SM-0001", START + 1 + 900)
    assert s.m.prepaid is not None and s.m.prepaid.credit is not None and s.m.prepaid.credit.in_flight


def test_a_recharge_sends_the_new_balance_once_the_last_update_is_applied() -> None:
    s = credit_meter()
    s.pay(s.now + 60, 50_000, "P-recharge")
    assert credits(s) == [(f"{ACCOUNT}:k2", 62_000)]
    answer(s, s.now + 5)
    assert credits(s) == [] and s.m.prepaid is not None and s.m.prepaid.credit is not None
    c = s.m.prepaid.credit
    assert (c.outcome, c.applied_paise, c.balance_paise) == ("applied", 62_000, 62_000)


def test_changes_while_an_update_is_out_are_coalesced_into_one_update_of_the_latest_balance() -> None:
    s = credit_meter()
    s.pay(s.now + 60, 50_000, "P1")  # 62 000 out
    first = credits(s)[0][0]
    s.consume(s.now + 60, "2025-03-01", 6_000)  # debited while P1's update is out: nothing sent
    assert credits(s) == []
    s.pay(s.now + 60, 10_000, "P2")
    assert credits(s) == []
    balance = -s.m.dues_paise
    answer(s, s.now + 1)  # the first ends: the latest balance goes, the one in between never does
    assert [b for _, b in credits(s)] == [balance]
    assert credits(s)[0][0] != first
    answer(s, s.now + 1)
    assert credits(s) == []


def test_a_duplicate_or_stale_result_changes_nothing() -> None:
    s = credit_meter()
    old = s.m.prepaid.credit.command_id  # type: ignore[union-attr]
    s.pay(s.now + 60, 50_000, "P1")
    s.result(s.now + 1, command_id=old)  # the opening balance's update, answered again
    assert s.last_events == () and s.m.prepaid.credit.in_flight  # type: ignore[union-attr]


def test_unsupported_is_final_until_the_balance_changes_again() -> None:
    s = Sim(policy=CREDIT_POLICY).register(START).prepaid(START + 1, 12_000)
    answer(s, s.now + 1, RelayResultStatus.FAILED, error_code="unsupported")
    ended = of_type(s.last_events, MeterCreditEnded)
    assert [(e.outcome, e.error, e.retry_at) for e in ended] == [("failed", "unsupported", None)]
    assert credits(s) == [] and next_check_at(s.m, s.policy) is None
    s.check(s.now + 3600)
    assert credits(s) == []  # not retried
    s.pay(s.now + 60, 10_000, "P1")
    assert [b for _, b in credits(s)] == [22_000]


def test_a_retryable_failure_is_sent_again_after_the_backoff_with_the_balance_of_that_time() -> None:
    s = credit_meter()
    s.pay(s.now + 60, 50_000, "P1")
    answer(s, s.now + 1, RelayResultStatus.FAILED, error_code="no_communication", retryable=True)
    assert credits(s) == []
    retry_at = s.m.prepaid.credit.retry_at  # type: ignore[union-attr]
    assert retry_at == s.now + 30  # relay.retry_base_seconds
    s.pay(s.now + 5, 1_000, "P2")  # during the backoff: waits for it
    assert credits(s) == []
    assert next_check_at(s.m, s.policy) == retry_at
    s.wake()
    sent = s.sent(RelayAction.CREDIT)
    assert [(c.balance_paise, c.attempt) for c in sent] == [(63_000, 1)]  # a new balance: a fresh try


def test_the_same_balance_is_tried_at_most_max_attempts_times() -> None:
    s = credit_meter()
    s.pay(s.now + 60, 50_000, "P1")
    attempts = []
    for _ in range(5):
        c = s.m.prepaid.credit  # type: ignore[union-attr]
        if c is None or not c.in_flight:
            break
        attempts.append(c.attempt)
        answer(s, s.now + 1, RelayResultStatus.FAILED, error_code="timeout", retryable=True)
        if s.m.prepaid.credit.retry_at is not None:  # type: ignore[union-attr]
            s.wake()
    assert attempts == [1, 2, 3]  # relay.max_attempts
    assert s.m.prepaid.credit.outcome == "failed" and s.m.prepaid.credit.retry_at is None  # type: ignore[union-attr]


def test_an_update_without_a_result_by_expiry_is_sent_again() -> None:
    s = credit_meter()
    s.pay(s.now + 60, 50_000, "P1")
    first = credits(s)[0][0]
    assert next_check_at(s.m, s.policy) == s.now + 900 + 30
    s.wake()
    ended = of_type(s.last_events, MeterCreditEnded)
    assert [(e.command_id, e.outcome) for e in ended] == [(first, "expired")]
    assert [(c.balance_paise, c.attempt) for c in s.sent(RelayAction.CREDIT)] == [(62_000, 2)]


def test_meters_that_do_not_keep_their_own_credit_get_no_update() -> None:
    plain = Sim().register(START).prepaid(START + 1, 12_000).pay(START + 60, 5_000)  # default policy
    assert not of_type(plain.journal, MeterCreditSent)
    mode_0 = Sim(policy=CREDIT_POLICY).register(START, control_mode=0).prepaid(START + 1, 12_000)
    other_head_end = Sim(policy=CREDIT_POLICY).register(START, head_end="hes-b").prepaid(START + 1, 12_000)
    postpaid = Sim(policy=CREDIT_POLICY).register(START).pay(START + 60, 5_000)
    for s in (mode_0, other_head_end, postpaid):
        assert not of_type(s.journal, MeterCreditSent)


def test_a_recharge_that_reconnects_sends_the_balance_too_on_the_payment_fast_path() -> None:
    s = credit_meter(balance=1_000)
    s.consume(at(2025, 3, 3, 10), "2025-03-02", 9_000)  # a Monday: below zero, cut
    for _ in range(8):
        c = s.m.prepaid.credit  # type: ignore[union-attr]
        if c is not None and c.in_flight:
            answer(s, s.now + 1)
        elif s.m.pending is not None:
            s.disconnected_ok(s.now + 5)
        elif s.m.relay is RelayState.DISCONNECTED:
            break
        else:
            s.wake()
    assert s.m.relay is RelayState.DISCONNECTED and -s.m.dues_paise < 0
    pay = ClearPayment(account=ACCOUNT, payment_id="P-up", amount_paise=50_000, channel="upi",
                       cashless=True, paid_at=s.now + 60)
    fast = handle_batched(s.m, pay, s.now + 60, s.policy)
    slow = handle(s.m, pay, s.now + 60, s.policy)
    assert fast == slow
    actions = [e.action for e in slow[2] if hasattr(e, "action")]
    assert RelayAction.CONNECT in actions and RelayAction.CREDIT in actions
