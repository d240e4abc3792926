"""A prepaid meter that keeps its own credit: jodo keeps that credit in step with its balance (issue 16).

Which meters (`keeps_meter_credit`): prepaid, with a relay, in a control mode that lets the meter cut
itself (class 70 transition g, local_disconnect: modes 1-6, research/domain.md §1.1), on a head-end listed
in policy ``prepaid.meter_credit_head_ends``. Such a meter counts down its own credit and disconnects on
it; if its count drifts from jodo's balance it cuts a consumer jodo holds in credit, or keeps the supply
on at zero. So after every command that changed anything, `sync_meter_credit` compares jodo's balance
(``-dues_paise``) with the last credit update (`MeterCredit`, in ``PrepaidState.credit``):

- At most one update in flight per meter: a newer balance waits for it and goes next. Only the latest
  balance is ever sent (those in between are superseded before they are sent) and a meter's updates never
  reorder: the head-end never holds two of them.
- Ids are minted from the meter's seq (``<account>:k<n>``, `MeterCreditSent`): a re-run of a decision
  gives the same id, and the gateway and the head-end deduplicate on it.
- Its result comes back as a `ReportRelayResult` for its id (`credit_result`): processed = applied, the
  meter holds the balance; a retryable failure (no_communication, timeout) is sent again after the relay
  retry backoff, at most ``relay.max_attempts`` sends of one balance; a final one (``unsupported``: the
  head-end's protocol has no credit update; rejected) is not sent again until the balance changes. No
  result by expiry + grace: expired, sent again at once.
"""

from __future__ import annotations

from domain.commands import ReportRelayResult
from domain.drive import Draft
from domain.effects import SendRelayCommand
from domain.enums import RelayAction, RelayResultStatus
from domain.events import MeterCreditEnded, MeterCreditSent
from domain.policy import Policy
from domain.rules import retry_delay_seconds
from domain.state import Meter, MeterCredit

__all__ = [
    "LOCAL_DISCONNECT_CONTROL_MODES",
    "credit_check_at",
    "credit_command_of",
    "credit_result",
    "keeps_meter_credit",
    "sync_meter_credit",
]

#: Control modes in which a meter may disconnect itself (transition g, local_disconnect): every mode but
#: 0, whose object is always connected (research §1.1, Gurux ControlMode).
LOCAL_DISCONNECT_CONTROL_MODES = frozenset({1, 2, 3, 4, 5, 6})
_BALANCE_CHANGED = "prepaid balance changed: the meter keeps its own credit"
_RETRY = "credit update retried"
_AGAIN = "credit update sent again: no answer yet"


def keeps_meter_credit(m: Meter, policy: Policy) -> bool:
    """Does this meter keep its own prepaid credit, so jodo must send it every balance it needs?"""
    heads = policy.prepaid_meter_credit_head_ends
    if not heads or m.prepaid is None:
        return False
    profile = m.profile
    return (profile.relay_capable and profile.control_mode in LOCAL_DISCONNECT_CONTROL_MODES
            and ("*" in heads or profile.head_end in heads))


def sync_meter_credit(d: Draft, cause: str) -> None:
    """Issue the meter's next credit update if one is due (see the module doc); ``cause`` correlates it."""
    m = d.m
    if not keeps_meter_credit(m, d.policy):
        return
    now, policy = d.now, d.policy
    balance = -m.dues_paise
    c = m.prepaid.credit if m.prepaid is not None else None
    attempt = 1
    if c is not None:
        if c.in_flight:
            if now < c.expires_at + policy.relay_result_grace_seconds:
                return  # one at a time: the newest balance goes once this one has ended
            _end(d, c, "expired", "no result by expiry", retry=True)
            c = d.m.prepaid.credit  # type: ignore[union-attr]
            assert c is not None
        if c.outcome == "applied":
            if c.balance_paise == balance:
                return
        elif c.retry_at is not None:
            if now < c.retry_at:
                return  # backing off: the retry carries the balance of its time
            attempt = c.attempt + 1 if c.balance_paise == balance else 1
        elif c.balance_paise == balance:
            return  # given up on this balance (unsupported, rejected, attempts spent): a new one is tried
    command_id = d.mint("k")
    expires_at = now + policy.relay_command_expiry_seconds
    reason = _RETRY if attempt > 1 else _BALANCE_CHANGED
    d.emit(MeterCreditSent(account=m.account, at=now, command_id=command_id, balance_paise=balance,
                           expires_at=expires_at, attempt=attempt, correlation_id=cause))
    d.do(SendRelayCommand(command_id=command_id, account=m.account, meter_serial=m.serial,
                          head_end=m.profile.head_end, action=RelayAction.CREDIT, expires_at=expires_at,
                          reason=reason, correlation_id=cause, attempt=attempt, balance_paise=balance))


def credit_result(d: Draft, r: ReportRelayResult) -> str | None:
    """The head-end's result for the meter's credit update in flight; None if it is not that one."""
    m = d.m
    c = m.prepaid.credit if m.prepaid is not None else None
    if c is None or c.command_id != r.command_id or not c.in_flight:
        return None  # an older update, or one already ended: never counts
    status = r.status
    if status is RelayResultStatus.PROCESSED:
        _end(d, c, "applied", None, retry=False)
    elif status is RelayResultStatus.REJECTED:
        _end(d, c, "rejected", r.error_code, retry=False)
    elif status is RelayResultStatus.EXPIRED:
        _end(d, c, "expired", r.error_code, retry=True)
    elif status is RelayResultStatus.FAILED:
        _end(d, c, "failed", r.error_code, retry=r.retryable)
    else:
        return None  # the disconnect guard's answers are not for credit updates
    return c.command_id


def _end(d: Draft, c: MeterCredit, outcome: str, error: str | None, *, retry: bool) -> None:
    now, policy = d.now, d.policy
    retry_at = None
    if retry and c.attempt < policy.relay_max_attempts:
        retry_at = now if outcome == "expired" else now + retry_delay_seconds(c.attempt, policy)
    d.emit(MeterCreditEnded(account=d.m.account, at=now, command_id=c.command_id, outcome=outcome,
                            error=error, retry_at=retry_at))


def credit_check_at(m: Meter, policy: Policy) -> int | None:
    """When the shard must check this meter again for its credit update (expiry, retry), or None."""
    c = m.prepaid.credit if m.prepaid is not None else None
    if c is None or not keeps_meter_credit(m, policy):
        return None
    if c.in_flight:
        return c.expires_at + policy.relay_result_grace_seconds
    return c.retry_at


def credit_command_of(m: Meter) -> SendRelayCommand | None:
    """The credit update this meter has in flight, to send again unchanged (same id and attempt: the
    gateway and the head-end run it once), or None."""
    c = m.prepaid.credit if m.prepaid is not None else None
    if c is None or not c.in_flight:
        return None
    return SendRelayCommand(command_id=c.command_id, account=m.account, meter_serial=m.serial,
                            head_end=m.profile.head_end, action=RelayAction.CREDIT,
                            expires_at=c.expires_at, reason=_AGAIN, correlation_id="", attempt=c.attempt,
                            balance_paise=c.balance_paise)
