"""Payment-gateway webhooks: verify the signature on the raw body, then read the payment. No HTTP here.

Two formats, chosen per gateway by ``[gateways.<name>] format``:

``razorpay``
    ``X-Razorpay-Signature: <hex HMAC-SHA256(webhook secret, raw body)>``, lowercase hex compared
    exactly as Razorpay's SDK does (uppercase is refused). Event ``payment.captured``
    becomes a payment: ``payload.payment.entity`` gives ``id`` (→ payment_id), ``amount`` (integer
    paise), ``currency`` (INR if present), ``method`` (→ channel), ``created_at`` (→ paid_at) and
    ``notes[<account_field>]`` (→ account). The ``X-Razorpay-Event-Id`` header becomes ``event_id``
    (deduplicated too). Every other event (``payment.failed``, ``order.paid``, refunds...) is
    `IgnoredEvent`: answered 200 so Razorpay does not retry it for 24 h and then disable the webhook.

``jodo`` (Stripe-style)
    ``Jodo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``; several
    ``v1=`` are allowed (secret rotation); ``|now - t|`` must be within ``tolerance_s`` (300 s) either
    way. Body: ``{"payment_id", "account", "amount_paise", "channel", "paid_at"}`` plus optional
    ``"event_id"`` and ``"cashless"``; unknown keys are refused.

Order of checks: size (413), content type (415), signature (401), JSON (400), fields (400/422). The
signature is checked on the raw bytes before any parsing, with `hmac.compare_digest`. Money is integer
paise: a float (``100.5``) or a string (``"100"``) amount is 422, never rounded or parsed.

`sign_razorpay` and `sign_jodo` produce the headers, for tests, the demo and load generators.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
from protocols.payments import MAX_PAYMENT_PAISE, PaymentReceived, validate_account, validate_payment_id

__all__ = [
    "JODO_SIGNATURE_HEADER",
    "RAZORPAY_EVENT_ID_HEADER",
    "RAZORPAY_SIGNATURE_HEADER",
    "IgnoredEvent",
    "WebhookError",
    "WebhookOutcome",
    "check_json_content_type",
    "find_gateway",
    "parse_json",
    "parse_webhook",
    "payment_from_object",
    "razorpay_payment",
    "sign_jodo",
    "sign_razorpay",
]

JODO_SIGNATURE_HEADER = "Jodo-Signature"
RAZORPAY_SIGNATURE_HEADER = "X-Razorpay-Signature"
RAZORPAY_EVENT_ID_HEADER = "X-Razorpay-Event-Id"

#: Earliest plausible payment time (2000-01-01T00:00:00Z); earlier is a unit mistake (ms? days?).
EARLIEST_PAID_AT = 946_684_800
#: How far in the future a paid_at may be (clock skew between a gateway and us), seconds.
PAID_AT_FUTURE_SLACK_S = 86_400

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DIGITS = re.compile(r"^[0-9]{1,12}$")
_JODO_REQUIRED = ("payment_id", "account", "amount_paise", "channel", "paid_at")
_JODO_OPTIONAL = ("event_id", "cashless")


@dataclass(frozen=True, slots=True, kw_only=True)
class IgnoredEvent:
    """A genuine, signed gateway event that is not a captured payment: answer 200, store nothing."""

    gateway: str
    event: str
    reason: str
    event_id: str | None = None


WebhookOutcome = PaymentReceived | IgnoredEvent


# ---------------------------------------------------------------- signing


def _key_bytes(secret: Secret | str | bytes) -> bytes:
    if isinstance(secret, Secret):
        return secret.reveal().encode()
    return secret.encode() if isinstance(secret, str) else secret


def sign_razorpay(secret: Secret | str | bytes, body: bytes) -> str:
    """The ``X-Razorpay-Signature`` value for ``body``: hex HMAC-SHA256 keyed with the webhook secret."""
    return hmac.new(_key_bytes(secret), body, hashlib.sha256).hexdigest()


def sign_jodo(secret: Secret | str | bytes, body: bytes, t: int) -> str:
    """The ``Jodo-Signature`` value for ``body`` sent at unix time ``t``: ``t=<t>,v1=<hex>``."""
    mac = hmac.new(_key_bytes(secret), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _same(expected_hex: str, given: str) -> bool:
    # both sides ASCII bytes so compare_digest never raises on odd input; constant time either way
    return hmac.compare_digest(expected_hex.encode(), given.strip().lower().encode("ascii", "replace"))


def _same_exact(expected_hex: str, given: str) -> bool:
    # exactly as razorpay.Utility.verify_webhook_signature: compare_digest of hexdigest and the header
    # as sent (no case folding, no trimming); bytes so odd input never raises
    return hmac.compare_digest(expected_hex.encode(), given.encode("utf-8", "replace"))


def _verify_razorpay(gateway: GatewayConfig, headers: Mapping[str, str], body: bytes) -> None:
    given = headers.get(RAZORPAY_SIGNATURE_HEADER.lower())
    if not given:
        raise SignatureInvalid("missing signature header", where=RAZORPAY_SIGNATURE_HEADER)
    if not _same_exact(sign_razorpay(gateway.secret, body), given):
        raise SignatureInvalid(
            "signature does not match the body (HMAC-SHA256 of the raw body with the webhook secret)",
            where=RAZORPAY_SIGNATURE_HEADER,
        )


def _verify_jodo(gateway: GatewayConfig, headers: Mapping[str, str], body: bytes, now: float) -> None:
    where = JODO_SIGNATURE_HEADER
    header = headers.get(where.lower())
    if not header:
        raise SignatureInvalid("missing signature header", where=where)
    t_text: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key == "t":
            t_text = value
        elif sep and key == "v1":
            candidates.append(value)
    if t_text is None or not _DIGITS.match(t_text) or not candidates:
        raise SignatureInvalid("expected t=<unix seconds>,v1=<hex HMAC-SHA256>", where=where)
    secret = _key_bytes(gateway.secret)
    expected = hmac.new(secret, t_text.encode() + b"." + body, hashlib.sha256).hexdigest()
    # compare against every candidate (no early exit) so timing says nothing about which one matched
    matched = [_same(expected, c) for c in candidates if _HEX64.match(c.strip())]
    if not any(matched):
        raise SignatureInvalid(
            'signature does not match HMAC-SHA256 of "<t>.<raw body>" with the gateway secret', where=where
        )
    skew = now - int(t_text)
    if abs(skew) > gateway.tolerance_s:
        raise SignatureInvalid(
            f"timestamp t={t_text} is {abs(skew):.0f} s {'behind' if skew > 0 else 'ahead of'} the server "
            f"clock; tolerance is {gateway.tolerance_s} s (replayed or clock skew)",
            where=where,
        )


# ---------------------------------------------------------------- request shape


def find_gateway(gateways: Mapping[str, GatewayConfig], name: str) -> GatewayConfig:
    """The configured gateway called ``name``, or `UnknownGateway` (404)."""
    gateway = gateways.get(name)
    if gateway is None:
        raise UnknownGateway(f"no gateway {name[:64]!r} is configured", where="path")
    return gateway


def check_json_content_type(value: str | None) -> None:
    """`UnsupportedMediaType` (415) unless ``value`` is ``application/json`` (charset, if any, UTF-8)."""
    if not value:
        raise UnsupportedMediaType("Content-Type is missing; send application/json", where="Content-Type")
    media, *params = (p.strip().lower() for p in value.split(";"))
    if media != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type {media[:64]!r} is not accepted; send application/json", where="Content-Type"
        )
    for param in params:
        name, _, charset = param.partition("=")
        if name == "charset" and charset.strip('"') not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(
                f"charset {charset[:32]!r} is not accepted; send UTF-8", where="Content-Type"
            )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # two "amount" keys: which one a reader sees differs between parsers
            raise ValueError(f"duplicate key {key[:64]!r} in a JSON object")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# one strict decoder for every request (json.loads would build a new one per call when given hooks)
_DECODER = json.JSONDecoder(parse_constant=_no_constants, object_pairs_hook=_no_duplicate_keys)


def parse_json(body: bytes, where: str = "body") -> Any:
    """Strict JSON from UTF-8 bytes: no NaN/Infinity, no duplicate keys. `MalformedRequest` (400) if not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"not UTF-8: {exc.reason} at byte {exc.start}", where=where) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", where=where
        ) from None
    except RecursionError:
        raise MalformedRequest("JSON nested too deeply", where=where) from None
    except ValueError as exc:  # the hooks above, or an integer too long to convert
        raise MalformedRequest(f"not acceptable JSON: {exc}", where=where) from None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# ---------------------------------------------------------------- fields


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise MalformedRequest("required field is missing", where=f"{where}.{key}" if where else key)
    return obj[key]


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise MalformedRequest(f"must be a string, got {_json_type(value)}", where=_path(where, key))
    return value


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number with a fraction", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _amount(value: Any, where: str) -> int:
    """Integer paise, 1..MAX_PAYMENT_PAISE; anything else is 422 (never rounded, never parsed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value)[:40]
        raise InvalidPayment(
            f"amount must be a JSON integer number of paise, got {_json_type(value)} {shown} "
            "(amounts are never rounded or parsed from strings)",
            where=where,
        )
    if not 0 < value <= MAX_PAYMENT_PAISE:
        raise InvalidPayment(
            f"amount must be between 1 and {MAX_PAYMENT_PAISE} paise, got {value}", where=where
        )
    return value


def _timestamp(value: Any, where: str, now: float) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPayment(f"must be integer unix seconds, got {_json_type(value)}", where=where)
    if value < EARLIEST_PAID_AT:
        raise InvalidPayment(f"{value} is before the year 2000: not unix seconds?", where=where)
    if value > now + PAID_AT_FUTURE_SLACK_S:
        raise InvalidPayment(f"{value} is more than a day in the future", where=where)
    return value


def _checked(check: Any, value: str, where: str) -> str:
    try:
        check(value)
    except ValueError as exc:
        raise InvalidPayment(str(exc), where=where) from None
    return value


def _channel(value: str, where: str) -> str:
    if not 1 <= len(value) <= 32:
        raise InvalidPayment("channel must be 1-32 characters", where=where)
    return value


def payment_from_object(
    obj: Any,
    *,
    gateway: str,
    received_at: float,
    cashless: bool = True,
    where: str = "",
    allow_gateway_field: bool = False,
) -> PaymentReceived:
    """A `PaymentReceived` from a jodo-format JSON object (one webhook body or one /v1/payments item).

    ``where`` prefixes the JSON path in errors (``[3]`` for the fourth item of a batch). With
    ``allow_gateway_field`` the object may name its own ``"gateway"`` (bulk APIs: "bbps", "counter").
    """
    if not isinstance(obj, dict):
        raise MalformedRequest(f"expected a JSON object, got {_json_type(obj)}", where=where or "body")
    allowed = {*_JODO_REQUIRED, *_JODO_OPTIONAL, *(("gateway",) if allow_gateway_field else ())}
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise MalformedRequest(
            f"unknown fields {unknown[:5]}; expected {', '.join(_JODO_REQUIRED)} "
            f"(optional: {', '.join(sorted(allowed - set(_JODO_REQUIRED)))})",
            where=where or "body",
        )
    payment_id = _checked(validate_payment_id, _str(obj, "payment_id", where), _path(where, "payment_id"))
    account = _checked(validate_account, _str(obj, "account", where), _path(where, "account"))
    amount = _amount(_get(obj, "amount_paise", where), _path(where, "amount_paise"))
    channel = _channel(_str(obj, "channel", where), _path(where, "channel"))
    paid_at = _timestamp(_get(obj, "paid_at", where), _path(where, "paid_at"), received_at)
    event_id = None
    if obj.get("event_id") is not None:
        event_id = _checked(validate_payment_id, _str(obj, "event_id", where), _path(where, "event_id"))
    if "cashless" in obj:
        if not isinstance(obj["cashless"], bool):
            raise MalformedRequest("must be true or false", where=_path(where, "cashless"))
        cashless = obj["cashless"]
    if allow_gateway_field and "gateway" in obj:
        gateway = _channel(_str(obj, "gateway", where), _path(where, "gateway"))
    return _payment(
        payment_id=payment_id, account=account, amount_paise=amount, channel=channel, gateway=gateway,
        paid_at=paid_at, received_at=received_at, cashless=cashless, event_id=event_id, where=where,
    )


def _payment(*, received_at: float, where: str, **fields: Any) -> PaymentReceived:
    try:
        return PaymentReceived(received_at=max(int(received_at), 1), **fields)
    except ValueError as exc:  # every field was checked above; this is the record's own last word
        raise InvalidPayment(str(exc), where=where or "body") from None


# ---------------------------------------------------------------- formats


def parse_webhook(
    gateway: GatewayConfig,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    max_body_bytes: int | None = None,
) -> WebhookOutcome:
    """Verify and read one webhook delivery; `WebhookError` (with ``.status``) says why not.

    ``headers`` may be any mapping (names are compared case-insensitively); ``now`` is unix seconds
    (injected, so tests control the clock); it also becomes ``received_at``.
    """
    if max_body_bytes is not None and len(body) > max_body_bytes:
        raise BodyTooLarge(f"{len(body)} bytes; the limit is {max_body_bytes}", where="body")
    lowered = _lower(headers)
    check_json_content_type(lowered.get("content-type"))
    if gateway.format == "razorpay":
        _verify_razorpay(gateway, lowered, body)
        return _razorpay(gateway, lowered, parse_json(body), now)
    _verify_jodo(gateway, lowered, body, now)
    return payment_from_object(
        parse_json(body), gateway=gateway.name, received_at=now, cashless=gateway.cashless
    )


def _razorpay(gateway: GatewayConfig, headers: Mapping[str, str], doc: Any, now: float) -> WebhookOutcome:
    if not isinstance(doc, dict):
        raise MalformedRequest(f"expected a JSON object, got {_json_type(doc)}", where="body")
    event = _get(doc, "event", "")
    if not isinstance(event, str):
        raise InvalidPayment(f"unknown event shape: event is {_json_type(event)}", where="event")
    event_id = headers.get(RAZORPAY_EVENT_ID_HEADER.lower()) or None
    if event_id is not None:
        try:
            validate_payment_id(event_id, "event id")
        except ValueError as exc:
            raise MalformedRequest(str(exc), where=RAZORPAY_EVENT_ID_HEADER) from None
    if event != "payment.captured":
        return IgnoredEvent(
            gateway=gateway.name, event=event[:64], event_id=event_id,
            reason="only payment.captured credits a consumer",
        )
    entity = doc.get("payload")
    for key in ("payment", "entity"):
        entity = entity.get(key) if isinstance(entity, dict) else None
    if not isinstance(entity, dict):
        raise InvalidPayment(
            "unknown event shape: payment.captured without an object at payload.payment.entity",
            where="payload.payment.entity",
        )
    created = entity["created_at"] if "created_at" in entity else _get(doc, "created_at", "")
    return razorpay_payment(gateway, {**entity, "created_at": created}, now, event_id=event_id)


def razorpay_payment(
    gateway: GatewayConfig,
    entity: Mapping[str, Any],
    now: float,
    *,
    event_id: str | None = None,
    where: str = "payload.payment.entity",
) -> PaymentReceived:
    """The `PaymentReceived` of one captured Razorpay payment entity: what a ``payment.captured``
    webhook carries at ``payload.payment.entity``, and what the payments API lists (reconciliation
    builds the same record, so the ledger deduplicates the two). `WebhookError` names the field."""
    currency = entity.get("currency", "INR")
    if currency != "INR":
        raise InvalidPayment(f"currency must be INR, got {str(currency)[:8]!r}", where=f"{where}.currency")
    status = entity.get("status", "captured")
    if status != "captured":
        raise InvalidPayment(f"payment.captured with status {str(status)[:16]!r}", where=f"{where}.status")
    payment_id = _checked(validate_payment_id, _str(entity, "id", where), f"{where}.id")
    amount = _amount(_get(entity, "amount", where), f"{where}.amount")
    notes = entity.get("notes")
    notes = notes if isinstance(notes, dict) else {}  # Razorpay sends empty notes as []
    note_path = f"{where}.notes.{gateway.account_field}"
    account = notes.get(gateway.account_field)
    if account is not None and not isinstance(account, str):
        raise InvalidPayment(
            f"must be a string (the consumer account), got {_json_type(account)}", where=note_path
        )
    if not account:
        raise InvalidPayment(
            "payment carries no consumer account in its notes; cannot tell which meter was paid for",
            where=note_path,
        )
    _checked(validate_account, account, note_path)
    method = entity.get("method")
    channel = _channel(method, f"{where}.method") if isinstance(method, str) else "razorpay"
    paid_at = _timestamp(_get(entity, "created_at", where), f"{where}.created_at", now)
    return _payment(
        payment_id=payment_id, account=account, amount_paise=amount, channel=channel, gateway=gateway.name,
        paid_at=paid_at, received_at=now, cashless=gateway.cashless, event_id=event_id, where=where,
    )
