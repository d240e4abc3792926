"""A small blocking HTTP client for the front door's admin and payments APIs (the CLI's transport).

The CLI never opens an ActorSystem (THESPIAN.md: with no admin listening, that silently starts a new
one): every command that acts on a running node goes through these routes, with a bearer token.

Errors::

    ApiError            base: ``status`` (0 when there was no HTTP answer), ``code``, ``detail``
    ├── NodeUnreachable connection refused / timed out: is `jodo serve` running at that URL?
    └── ApiRefused      the node answered 4xx/5xx; ``status`` and its JSON error say why
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from jodo.config import Config

__all__ = ["AdminClient", "ApiError", "ApiRefused", "NodeUnreachable", "base_url"]


class ApiError(Exception):
    """Base: the request did not give the answer asked for."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status or 'no answer'} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class NodeUnreachable(ApiError):
    """Nothing answered at the URL (connection refused, reset or timed out)."""


class ApiRefused(ApiError):
    """The node answered with an error status; ``body`` is its JSON (``error``, ``detail``, ``where``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        where = f" (at {body['where']})" if body.get("where") else ""
        super().__init__(status, str(body.get("error", "error")), f"{body.get('detail', '')}{where}")
        self.body = body


def base_url(config: Config) -> str:
    """Where the configured node's front door listens, as seen from this host."""
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{config.http.port}"


@dataclass(frozen=True, slots=True)
class AdminClient:
    """Requests to one node. ``token`` is the admin token (``payments_token`` for /v1/payments)."""

    url: str
    token: str | None = None
    payments_token: str | None = None
    timeout: float = 130.0

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_text(self, path: str) -> str:
        """A text answer (``/metrics``); errors as for `request`."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        req = urllib.request.Request(self.url.rstrip("/") + path, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return str(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise ApiRefused(exc.code, {"detail": exc.read()[:200].decode("utf-8", "replace")}) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NodeUnreachable(0, "unreachable", f"no answer from {self.url}: {reason}") from None

    def post_json(self, path: str, doc: Any, *, payments: bool = False) -> Any:
        body = json.dumps(doc, separators=(",", ":")).encode()
        return self.request("POST", path, body, "application/json", payments=payments)

    def post_bytes(self, path: str, body: bytes, content_type: str) -> Any:
        return self.request("POST", path, body, content_type)

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
        *, payments: bool = False,
    ) -> Any:
        """The decoded JSON answer of a 2xx; `ApiRefused` for an error status, `NodeUnreachable`."""
        headers = {"Accept": "application/json"}
        token = self.payments_token if payments else self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            doc = _decode(raw) if raw else {}
            raise ApiRefused(exc.code, doc if isinstance(doc, dict) else {"detail": str(doc)}) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NodeUnreachable(0, "unreachable", f"no answer from {self.url}: {reason}") from None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"detail": raw[:200].decode("utf-8", "replace")}
