"""jodo.webhooks: signatures exactly as documented, every status class, money as integer paise."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jodo.config import GatewayConfig, Secret
from jodo.errors import (
    BodyTooLarge,
    InvalidPayment,
    MalformedRequest,
    SignatureInvalid,
    UnknownGateway,
    UnsupportedMediaType,
    WebhookError,
)
from jodo.webhooks import (
    IgnoredEvent,
    check_json_content_type,
    find_gateway,
    parse_json,
    parse_webhook,
    payment_from_object,
    sign_jodo,
    sign_razorpay,
)
from protocols.payments import MAX_PAYMENT_PAISE, PaymentReceived

NOW = 1_717_000_000
RZP_SECRET = "rzp-webhook-secret"
JODO_SECRET = "jodo-signing-secret"
RAZORPAY = GatewayConfig(name="razorpay", format="razorpay", secret=Secret(RZP_SECRET), account_field="ivrs")
JODO = GatewayConfig(name="bbps", format="jodo", secret=Secret(JODO_SECRET), cashless=False)
JSON = {"Content-Type": "application/json"}


def rzp_event(**entity: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "pay_29QQoUBi66xm2f", "entity": "payment", "amount": 125_050, "currency": "INR",
        "status": "captured", "method": "upi", "notes": {"ivrs": "N3462019771"}, "created_at": NOW - 20,
    }
    base.update(entity)
    return {
        "entity": "event", "account_id": "acc_BFQ7uQEaa7j2z7", "event": "payment.captured",
        "contains": ["payment"], "payload": {"payment": {"entity": base}}, "created_at": NOW - 5,
    }


def rzp_headers(body: bytes, secret: str = RZP_SECRET, **extra: str) -> dict[str, str]:
    return {**JSON, "X-Razorpay-Signature": sign_razorpay(secret, body), **extra}


def jodo_body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "payment_id": "BBPS-CC013245678901", "account": "N3462019771", "amount_paise": 99_900,
        "channel": "bbps", "paid_at": NOW - 60,
    }
    base.update(fields)
    return base


def jodo_headers(body: bytes, t: int = NOW, secret: str = JODO_SECRET) -> dict[str, str]:
    return {**JSON, "Jodo-Signature": sign_jodo(secret, body, t)}


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- signing helpers


def test_razorpay_signature_is_hex_hmac_sha256_of_the_raw_body_known_vector() -> None:
    # RFC-style public vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    vector = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign_razorpay("key", b"The quick brown fox jumps over the lazy dog") == vector
    assert sign_razorpay(b"key", b"The quick brown fox jumps over the lazy dog") == vector
    assert sign_razorpay(Secret("key"), b"The quick brown fox jumps over the lazy dog") == vector


def test_jodo_signature_is_t_and_v1_over_timestamp_dot_body() -> None:
    body = b'{"payment_id":"p1"}'
    expected = hmac.new(b"whsec", b"1717000000." + body, hashlib.sha256).hexdigest()
    assert sign_jodo("whsec", body, 1717000000) == f"t=1717000000,v1={expected}"


# ---------------------------------------------------------------- razorpay


def test_razorpay_captured_payment_becomes_a_payment_received() -> None:
    body = encode(rzp_event())
    headers = rzp_headers(body, **{"X-Razorpay-Event-Id": "evt_KcPLBo1bF8ybOr"})
    payment = parse_webhook(RAZORPAY, headers, body, NOW)
    assert payment == PaymentReceived(
        payment_id="pay_29QQoUBi66xm2f", account="N3462019771", amount_paise=125_050, channel="upi",
        gateway="razorpay", paid_at=NOW - 20, received_at=NOW, cashless=True, event_id="evt_KcPLBo1bF8ybOr",
    )


def test_header_names_are_case_insensitive() -> None:
    body = encode(rzp_event())
    headers = {"content-type": "application/json", "x-razorpay-signature": sign_razorpay(RZP_SECRET, body)}
    assert isinstance(parse_webhook(RAZORPAY, headers, body, NOW), PaymentReceived)


def test_razorpay_failed_payment_is_ignored_not_refused() -> None:
    doc = rzp_event(status="failed")
    doc["event"] = "payment.failed"
    body = encode(doc)
    outcome = parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert isinstance(outcome, IgnoredEvent)
    assert outcome.event == "payment.failed" and outcome.gateway == "razorpay"


def test_razorpay_empty_notes_array_means_no_account_and_is_422() -> None:
    body = encode(rzp_event(notes=[]))
    with pytest.raises(InvalidPayment) as caught:
        parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert caught.value.where == "payload.payment.entity.notes.ivrs"


def test_razorpay_missing_signature_is_401() -> None:
    body = encode(rzp_event())
    with pytest.raises(SignatureInvalid) as caught:
        parse_webhook(RAZORPAY, JSON, body, NOW)
    assert caught.value.status == 401 and caught.value.where == "X-Razorpay-Signature"


@pytest.mark.parametrize("tamper", ["other secret", "one byte changed", "not hex", "api key style"])
def test_razorpay_wrong_signature_is_401(tamper: str) -> None:
    body = encode(rzp_event())
    signature = {
        "other secret": sign_razorpay("another-secret", body),
        "one byte changed": sign_razorpay(RZP_SECRET, body.replace(b"125050", b"925050")),
        "not hex": "zz" * 32,
        "api key style": hmac.new(RZP_SECRET.encode(), b"order_1|pay_1", hashlib.sha256).hexdigest(),
    }[tamper]
    with pytest.raises(SignatureInvalid):
        parse_webhook(RAZORPAY, {**JSON, "X-Razorpay-Signature": signature}, body, NOW)


def test_signature_is_checked_before_the_body_is_parsed() -> None:
    with pytest.raises(SignatureInvalid):
        parse_webhook(RAZORPAY, {**JSON, "X-Razorpay-Signature": "00" * 32}, b"{not json", NOW)


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [
        (100.5, "number with a fraction 100.5"),
        (100.0, "number with a fraction 100.0"),
        ("12500", "string '12500'"),
        (True, "boolean"),
        (None, "null"),
        (0, "between 1 and"),
        (-500, "between 1 and"),
        (MAX_PAYMENT_PAISE + 1, "between 1 and"),
    ],
)
def test_razorpay_amount_that_is_not_positive_integer_paise_is_422(amount: Any, fragment: str) -> None:
    body = encode(rzp_event(amount=amount))
    with pytest.raises(InvalidPayment) as caught:
        parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert caught.value.status == 422
    assert fragment in caught.value.detail
    assert caught.value.where == "payload.payment.entity.amount"


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"event": "payment.captured"}, "payload.payment.entity"),
        ({"event": "payment.captured", "payload": {"payment": []}}, "payload.payment.entity"),
        ({"event": 7}, "event"),
    ],
)
def test_razorpay_unknown_event_shape_is_422(doc: dict[str, Any], where: str) -> None:
    body = encode(doc)
    with pytest.raises(InvalidPayment) as caught:
        parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert caught.value.where == where


def test_razorpay_foreign_currency_is_422() -> None:
    body = encode(rzp_event(currency="USD"))
    with pytest.raises(InvalidPayment, match="INR"):
        parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)


def test_razorpay_missing_payment_id_is_400_naming_the_field() -> None:
    doc = rzp_event()
    del doc["payload"]["payment"]["entity"]["id"]
    body = encode(doc)
    with pytest.raises(MalformedRequest) as caught:
        parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert caught.value.status == 400 and caught.value.where == "payload.payment.entity.id"


# ---------------------------------------------------------------- jodo


def test_jodo_payment_becomes_a_payment_received() -> None:
    body = encode(jodo_body(event_id="evt-1"))
    payment = parse_webhook(JODO, jodo_headers(body), body, NOW)
    assert payment == PaymentReceived(
        payment_id="BBPS-CC013245678901", account="N3462019771", amount_paise=99_900, channel="bbps",
        gateway="bbps", paid_at=NOW - 60, received_at=NOW, cashless=False, event_id="evt-1",
    )


def test_jodo_signature_computed_independently_is_accepted() -> None:
    body = encode(jodo_body())
    t = NOW - 10
    mac = hmac.new(JODO_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {**JSON, "Jodo-Signature": f"t={t}, v1={'0' * 64}, v1={mac}"}  # rotation: any v1 may match
    assert isinstance(parse_webhook(JODO, headers, body, NOW), PaymentReceived)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_jodo_timestamp_within_300_seconds_either_way_is_accepted(skew: int) -> None:
    body = encode(jodo_body())
    assert isinstance(parse_webhook(JODO, jodo_headers(body, t=NOW + skew), body, NOW), PaymentReceived)


@pytest.mark.parametrize("skew", [-301, 301, -86_400])
def test_jodo_timestamp_outside_the_tolerance_is_401(skew: int) -> None:
    body = encode(jodo_body())
    with pytest.raises(SignatureInvalid, match="tolerance is 300 s"):
        parse_webhook(JODO, jodo_headers(body, t=NOW + skew), body, NOW)


@pytest.mark.parametrize(
    "header",
    ["", "v1=" + "0" * 64, f"t={NOW}", f"t=abc,v1={'0' * 64}", f"t={NOW},v1=nothex", "garbage"],
)
def test_jodo_malformed_or_wrong_signature_header_is_401(header: str) -> None:
    body = encode(jodo_body())
    with pytest.raises(SignatureInvalid) as caught:
        parse_webhook(JODO, {**JSON, "Jodo-Signature": header}, body, NOW)
    assert caught.value.where == "Jodo-Signature"


def test_jodo_signature_over_another_timestamp_is_401() -> None:
    body = encode(jodo_body())
    signed = sign_jodo(JODO_SECRET, body, NOW)
    moved = signed.replace(f"t={NOW}", f"t={NOW - 1}")
    with pytest.raises(SignatureInvalid, match="does not match"):
        parse_webhook(JODO, {**JSON, "Jodo-Signature": moved}, body, NOW)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("amount_paise", 100.5, InvalidPayment),
        ("amount_paise", "100", InvalidPayment),
        ("amount_paise", 0, InvalidPayment),
        ("amount_paise", -1, InvalidPayment),
        ("amount_paise", 10**30, InvalidPayment),
        ("account", "N346 2019", InvalidPayment),
        ("payment_id", "", InvalidPayment),
        ("paid_at", 1_717_000_000_000, InvalidPayment),  # milliseconds, not seconds
        ("paid_at", 86_400, InvalidPayment),
        ("paid_at", 1.5e9, InvalidPayment),
        ("channel", "x" * 33, InvalidPayment),
        ("account", 3462019771, MalformedRequest),
        ("cashless", "yes", MalformedRequest),
    ],
)
def test_jodo_bad_field_is_refused_naming_the_field(
    field: str, value: Any, error: type[WebhookError]
) -> None:
    body = encode(jodo_body(**{field: value}))
    with pytest.raises(error) as caught:
        parse_webhook(JODO, jodo_headers(body), body, NOW)
    assert caught.value.where == field


def test_jodo_missing_field_is_400_and_unknown_field_is_400() -> None:
    doc = jodo_body()
    del doc["paid_at"]
    body = encode(doc)
    with pytest.raises(MalformedRequest) as caught:
        parse_webhook(JODO, jodo_headers(body), body, NOW)
    assert caught.value.where == "paid_at" and "missing" in caught.value.detail
    body = encode(jodo_body(amount=5))
    with pytest.raises(MalformedRequest, match="unknown fields"):
        parse_webhook(JODO, jodo_headers(body), body, NOW)


# ---------------------------------------------------------------- request shape


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"amount_paise": NaN}', "NaN is not valid JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_body_that_is_not_a_json_object_is_400(body: bytes, fragment: str) -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_webhook(JODO, jodo_headers(body), body, NOW)
    assert caught.value.status == 400 and fragment in caught.value.detail


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_wrong_content_type_is_415(content_type: str | None) -> None:
    body = encode(jodo_body())
    headers = {"Jodo-Signature": sign_jodo(JODO_SECRET, body, NOW)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_webhook(JODO, headers, body, NOW)
    assert caught.value.status == 415


def test_json_content_type_with_utf8_charset_is_accepted() -> None:
    check_json_content_type("application/json; charset=UTF-8")
    check_json_content_type("Application/JSON")


def test_body_over_the_limit_is_413() -> None:
    body = encode(jodo_body(channel="bbps")) + b" " * 100
    with pytest.raises(BodyTooLarge) as caught:
        parse_webhook(JODO, jodo_headers(body), body, NOW, max_body_bytes=100)
    assert caught.value.status == 413


def test_unknown_gateway_is_404() -> None:
    with pytest.raises(UnknownGateway) as caught:
        find_gateway({"razorpay": RAZORPAY}, "paypal")
    assert caught.value.status == 404 and "paypal" in caught.value.detail
    assert find_gateway({"razorpay": RAZORPAY}, "razorpay") is RAZORPAY


def test_error_json_names_code_detail_and_where() -> None:
    error = InvalidPayment("amount must be ...", where="amount_paise")
    expected = {"error": "invalid_payment", "detail": "amount must be ...", "where": "amount_paise"}
    assert error.to_json() == expected


def test_batch_item_errors_carry_the_item_index_in_where() -> None:
    with pytest.raises(InvalidPayment) as caught:
        payment_from_object(jodo_body(amount_paise=1.5), gateway="api", received_at=NOW, where="[3]")
    assert caught.value.where == "[3].amount_paise"


def test_batch_items_may_name_their_own_gateway_only_when_allowed() -> None:
    doc = jodo_body(gateway="counter", cashless=False)
    payment = payment_from_object(doc, gateway="api", received_at=NOW, allow_gateway_field=True)
    assert payment.gateway == "counter" and payment.cashless is False
    with pytest.raises(MalformedRequest, match="unknown fields"):
        payment_from_object(doc, gateway="api", received_at=NOW)


def test_parse_json_reads_plain_values() -> None:
    assert parse_json(b'{"a": [1, "x", null, true]}') == {"a": [1, "x", None, True]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | json_values.map(encode), fmt=st.sampled_from(["jodo", "razorpay"]))
def test_any_signed_body_gives_a_payment_an_ignore_or_a_webhook_error(body: bytes, fmt: str) -> None:
    gateway, headers = (JODO, jodo_headers(body)) if fmt == "jodo" else (RAZORPAY, rzp_headers(body))
    try:
        outcome = parse_webhook(gateway, headers, body, NOW)
    except WebhookError as exc:
        assert 400 <= exc.status < 500
        json.dumps(exc.to_json())
    else:
        assert isinstance(outcome, PaymentReceived | IgnoredEvent)


@settings(max_examples=200, deadline=None)
@given(amount=st.integers(min_value=1, max_value=MAX_PAYMENT_PAISE))
def test_every_valid_integer_amount_is_kept_exactly(amount: int) -> None:
    body = encode(rzp_event(amount=amount))
    payment = parse_webhook(RAZORPAY, rzp_headers(body), body, NOW)
    assert isinstance(payment, PaymentReceived) and payment.amount_paise == amount
