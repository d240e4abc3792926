"""A fake of Razorpay's payments API on 127.0.0.1, for reconciliation tests with the real SDK as client.

It follows the documented shapes (https://razorpay.com/docs/api/payments/fetch-all-payments):
``GET /v1/payments?from=<unix>&to=<unix>&count=<1..100>&skip=<n>`` with HTTP basic auth (key id,
key secret) answers ``{"entity": "collection", "count": N, "items": [...]}``, newest first; errors
are ``{"error": {"code": "BAD_REQUEST_ERROR" | "SERVER_ERROR", "description": ...}}``. Tests
script failures ahead of time (`FakeRazorpay.script`): a 429 with ``Retry-After``, a 5xx, a body
that is not JSON, a page of another shape.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["KEY_ID", "KEY_SECRET", "FakeRazorpay", "Scripted", "entity"]

KEY_ID = "rzp_test_reconcile01"
KEY_SECRET = "rzp-api-key-secret-for-tests"
MAX_COUNT = 100


def entity(
    payment_id: str,
    *,
    account: str | None,
    amount: Any,
    created_at: int,
    status: str = "captured",
    **extra: Any,
) -> dict[str, Any]:
    """A payment entity as the API lists it (notes ``[]`` when empty, as Razorpay sends them)."""
    return {
        "id": payment_id,
        "entity": "payment",
        "amount": amount,
        "currency": "INR",
        "status": status,
        "method": "upi",
        "captured": status in ("captured", "refunded"),
        "amount_refunded": 0,
        "notes": {"account": account} if account is not None else [],
        "created_at": created_at,
        "order_id": None,
        "description": None,
        "email": "void@razorpay.com",
        "contact": "+919000090000",
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer to the next request: ``status``, headers, and a body (None: an error JSON)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


class FakeRazorpay:
    """``with FakeRazorpay() as api: api.payments.append(entity(...)); api.url`` → base_url for the SDK."""

    def __init__(self) -> None:
        self.payments: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []  # the query of every authorised payments request
        self.refused_auth = 0
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-razorpay", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *answers: Scripted) -> None:
        """Answer the next requests with these, in order, before serving normally again."""
        with self._lock:
            self._script.extend(answers)

    def __enter__(self) -> FakeRazorpay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ------------------------------------------------------------ serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if not self._authorised(handler.headers.get("Authorization", "")):
            self.refused_auth += 1
            return _send(handler, 401, _error("BAD_REQUEST_ERROR", "The api key provided is invalid"))
        with self._lock:
            self.requests.append(query)
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            body = (
                scripted.body
                if scripted.body is not None
                else _error(
                    "SERVER_ERROR" if scripted.status >= 500 else "BAD_REQUEST_ERROR",
                    f"scripted {scripted.status}",
                )
            )
            return _send(handler, scripted.status, body, scripted.headers)
        if url.path != "/v1/payments":
            return _send(handler, 404, _error("BAD_REQUEST_ERROR", "The requested URL was not found"))
        try:
            start, end = int(query.get("from", 0)), int(query.get("to", 2**40))
            count, skip = int(query.get("count", 10)), int(query.get("skip", 0))
        except ValueError:
            return _send(
                handler, 400, _error("BAD_REQUEST_ERROR", "from, to, count and skip must be integers")
            )
        if not 1 <= count <= MAX_COUNT:
            return _send(handler, 400, _error("BAD_REQUEST_ERROR", "The count may not be greater than 100."))
        with self._lock:
            chosen = [p for p in self.payments if _created(p) is not None and start <= _created(p) <= end]  # type: ignore[operator]
        chosen.sort(key=lambda p: (-(_created(p) or 0), str(p.get("id"))))
        items = chosen[skip : skip + count]
        _send(
            handler, 200, json.dumps({"entity": "collection", "count": len(items), "items": items}).encode()
        )

    @staticmethod
    def _authorised(header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme != "Basic":
            return False
        try:
            return base64.b64decode(value).decode() == f"{KEY_ID}:{KEY_SECRET}"
        except ValueError:
            return False


def _created(p: dict[str, Any]) -> int | None:
    value = p.get("created_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error(code: str, description: str) -> bytes:
    return json.dumps(
        {"error": {"code": code, "description": description, "source": "NA", "step": "NA", "reason": "NA"}}
    ).encode()


def _send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
