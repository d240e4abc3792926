"""Errors raised by the jodo package (config, webhooks, CSV import, front door).

Hierarchy::

    JodoError                       base; never raised itself
    ├── ConfigError                 jodo.config: the TOML file or a JODO_* variable is wrong
    ├── WebhookError                jodo.webhooks: a gateway request cannot become a payment
    │   ├── MalformedRequest        400 body is not JSON / not an object / a field is missing
    │   ├── SignatureInvalid        401 signature missing or wrong, timestamp outside the tolerance
    │   ├── UnknownGateway          404 no [gateways.<name>] configured
    │   ├── BodyTooLarge            413 more bytes than [http] max_body_bytes
    │   ├── UnsupportedMediaType    415 not application/json
    │   └── InvalidPayment          422 parsed, but the payment is nonsense (amount, account, event shape)
    ├── RequestRefused              a front-door backend refuses a request it understood (status + code)
    └── CsvRejected                 jodo.csvimport: the file (or its header) failed validation (defined
                                    there, beside the report it carries: no import cycle)

Every class says who raises it and what the caller does. `WebhookError` and `RequestRefused` carry the
HTTP status and a JSON-able body, so the front door turns them into responses without a lookup table.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BodyTooLarge",
    "ConfigError",
    "InvalidPayment",
    "JodoError",
    "MalformedRequest",
    "RequestRefused",
    "SignatureInvalid",
    "UnknownGateway",
    "UnsupportedMediaType",
    "WebhookError",
]


class JodoError(Exception):
    """Base of every jodo-package error. Catch a subclass, not this."""


class ConfigError(JodoError):
    """Raised by `jodo.config.load_config`: unknown key, bad value, unreadable file.

    The message names the key (``http.port``) and where it came from (the file path or the
    ``JODO_*`` variable). The process should print it and exit; nothing was started.
    """


class WebhookError(JodoError):
    """Raised by `jodo.webhooks` (and the front door's request checks): the request is refused.

    ``status`` is the HTTP status to answer with, ``code`` a stable machine-readable word, ``detail``
    what was wrong, ``where`` the header or JSON path it was found at (or None). The front door answers
    ``{"error": code, "detail": detail, "where": where}``; nothing was stored, the sender may retry
    only after fixing the request (except 401 after a secret rotation, which a retry can fix).
    """

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {detail}" if where else detail)
        self.detail = detail
        self.where = where

    def to_json(self) -> dict[str, Any]:
        """The response body: ``{"error", "detail", "where"}`` (``where`` is "request" when unknown)."""
        return {"error": self.code, "detail": self.detail, "where": self.where or "request"}


class MalformedRequest(WebhookError):
    """400: the body is not UTF-8 JSON, not the expected object/array, or a required field is missing."""

    status = 400
    code = "malformed"


class SignatureInvalid(WebhookError):
    """401: signature header missing, unparsable or wrong, or its timestamp outside the tolerance."""

    status = 401
    code = "bad_signature"


class UnknownGateway(WebhookError):
    """404: the URL names a gateway that has no ``[gateways.<name>]`` section."""

    status = 404
    code = "unknown_gateway"


class BodyTooLarge(WebhookError):
    """413: the body (or the number of items in a batch) exceeds the configured limit."""

    status = 413
    code = "too_large"


class UnsupportedMediaType(WebhookError):
    """415: the Content-Type is not one this route accepts."""

    status = 415
    code = "unsupported_media_type"


class InvalidPayment(WebhookError):
    """422: well-formed JSON, but the payment cannot be right.

    Amount not an integer number of paise (a float or a string is refused, never rounded), zero,
    negative or above `protocols.payments.MAX_PAYMENT_PAISE`; account or id malformed; an event of a
    kind this gateway format does not know how to read.
    """

    status = 422
    code = "invalid_payment"


class RequestRefused(JodoError):
    """Raised by a front-door `Backend` for an expected refusal it wants answered as-is.

    For example an unknown fault kind (400) or an injected message the runtime will not take (409).
    The front door answers ``status`` with ``{"error": code, "detail": detail, "where": where}`` (a
    ``where`` left None is filled in by status: the header, path or body part at fault); never use it
    for bugs.
    """

    def __init__(self, status: int, code: str, detail: str, *, where: str | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError("RequestRefused status must be 4xx or 5xx")
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.where = where
