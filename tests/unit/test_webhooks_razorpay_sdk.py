"""Razorpay webhooks are verified exactly as Razorpay's own SDK verifies them, and a consumer
account of the wrong JSON type is refused (422) naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
import razorpay  # type: ignore[import-untyped]
from razorpay.errors import SignatureVerificationError  # type: ignore[import-untyped]

from jodo.config import GatewayConfig, Secret
from jodo.errors import InvalidPayment, SignatureInvalid
from jodo.webhooks import parse_webhook, sign_razorpay
from protocols.payments import PaymentReceived

NOW = 1_717_000_000
SECRET = "rzp-webhook-secret"
GATEWAY = GatewayConfig(name="razorpay", format="razorpay", secret=Secret(SECRET))


def _body(account: Any = "N3462019771") -> bytes:
    entity = {"id": "pay_29QQoUBi66xm2f", "entity": "payment", "amount": 125_050, "currency": "INR",
              "status": "captured", "method": "upi", "notes": {"account": account}, "created_at": NOW - 20}
    doc = {"entity": "event", "event": "payment.captured", "payload": {"payment": {"entity": entity}}}
    return json.dumps(doc).encode()


def _sdk_accepts(body: bytes, signature: str) -> bool:
    client = razorpay.Client(auth=("rzp_test_key", "rzp_test_secret"))
    try:
        client.utility.verify_webhook_signature(body.decode(), signature, SECRET)
    except SignatureVerificationError:
        return False
    return True


def _jodo_accepts(body: bytes, signature: str) -> bool:
    try:
        parse_webhook(GATEWAY, {"Content-Type": "application/json", "X-Razorpay-Signature": signature},
                      body, NOW)
    except SignatureInvalid:
        return False
    return True


_GOOD = sign_razorpay(SECRET, _body())


@pytest.mark.parametrize("signature", [
    _GOOD,
    _GOOD.upper(),
    _GOOD[:10].upper() + _GOOD[10:],
    _GOOD + " ",
    " " + _GOOD,
    _GOOD[:-1],
    _GOOD + "0",
    sign_razorpay("another-secret", _body()),
    "zz" * 32,
])
def test_razorpay_signature_is_accepted_exactly_when_the_sdk_accepts_it(signature: str) -> None:
    assert _jodo_accepts(_body(), signature) == _sdk_accepts(_body(), signature)


def test_uppercase_hex_signature_is_refused_like_the_sdk_refuses_it() -> None:
    assert _sdk_accepts(_body(), _GOOD) and _jodo_accepts(_body(), _GOOD)
    assert not _sdk_accepts(_body(), _GOOD.upper())
    assert not _jodo_accepts(_body(), _GOOD.upper())


@pytest.mark.parametrize("account", [3462019771, 1.5, True, ["N1"], {"a": 1}])
def test_non_string_notes_account_is_422_naming_the_field(account: Any) -> None:
    body = _body(account)
    headers = {"Content-Type": "application/json", "X-Razorpay-Signature": sign_razorpay(SECRET, body)}
    with pytest.raises(InvalidPayment) as caught:
        parse_webhook(GATEWAY, headers, body, NOW)
    assert caught.value.status == 422
    assert caught.value.where == "payload.payment.entity.notes.account"
    assert "must be a string" in caught.value.detail


def test_string_notes_account_still_becomes_a_payment() -> None:
    body = _body("N3462019771")
    headers = {"Content-Type": "application/json", "X-Razorpay-Signature": sign_razorpay(SECRET, body)}
    payment = parse_webhook(GATEWAY, headers, body, NOW)
    assert isinstance(payment, PaymentReceived) and payment.account == "N3462019771"
