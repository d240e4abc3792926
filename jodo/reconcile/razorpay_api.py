"""Razorpay's payments list through the official SDK, paged, with rate limits and outages handled.

``client.payment.all({"from", "to", "count": 100, "skip"})`` answers
``{"entity": "collection", "count": N, "items": [...]}``; a page shorter than ``count`` is the last.
The SDK's exceptions do not carry the HTTP status, so a response hook on our own ``requests``
session records it (and ``Retry-After``). The session has ``trust_env = False``: no proxy or netrc
from the environment reaches the gateway's credentials.

    429            wait Retry-After (else 1 s, 2 s, 4 s ... capped), then ask for the same page again
    5xx, network   retry with backoff; after ``attempts`` tries the window is *incomplete*
    other 4xx      (bad key: 401) not retried: incomplete
    another shape  (no ``items`` list) incomplete: a page we cannot read is never taken as empty

`Listing.complete` is True only if every page up to the short one was read; reconciliation never
reports a clean window otherwise. ``wait`` is injected (tests; the node passes a stop event's wait,
so shutdown cuts a backoff short).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import razorpay  # type: ignore[import-untyped]
import requests

from jodo.config import Secret

__all__ = ["PAGE_SIZE", "Listing", "RazorpayLister"]

log = logging.getLogger("jodo.reconcile")

PAGE_SIZE = 100  # the API's maximum count
MAX_PAGES = 20_000  # 20 lakh payments in one window: beyond that something is wrong, not the fleet


@dataclass(slots=True)
class Listing:
    """What one window's pull read: the raw items, and whether the whole window was read."""

    items: list[Any] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    pages: int = 0
    requests: int = 0
    rate_limited: int = 0
    server_errors: int = 0


@dataclass(slots=True)
class _Seen:
    status: int = 0
    retry_after: str | None = None


class RazorpayLister:
    """Lists one Razorpay account's payments created in a window. One instance per thread."""

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: Secret,
        base_url: str = "https://api.razorpay.com",
        timeout_s: float = 10.0,
        attempts: int = 4,
        rate_limit_attempts: int = 8,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._seen = threading.local()
        session = requests.Session()
        session.trust_env = False
        session.hooks["response"].append(self._record)
        self._client = razorpay.Client(session=session, auth=(key_id, key_secret.reveal()), base_url=base_url)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.rate_limit_attempts = rate_limit_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        # wait(seconds) -> True if told to stop meanwhile
        self._wait = wait or (lambda seconds: threading.Event().wait(seconds))

    def __repr__(self) -> str:  # never the key
        return f"RazorpayLister(base_url={self._client.base_url!r})"

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._seen.last = _Seen(response.status_code, response.headers.get("Retry-After"))

    def list_payments(self, start: int, end: int) -> Listing:
        """Every payment created in [start, end] (unix seconds), newest first as the API pages them."""
        out = Listing()
        skip = 0
        while out.pages < MAX_PAGES:
            page = self._page(out, {"from": start, "to": end, "count": PAGE_SIZE, "skip": skip})
            if page is None:
                return out
            out.pages += 1
            out.items.extend(page)
            if len(page) < PAGE_SIZE:
                out.complete = True
                return out
            skip += len(page)
        out.error = f"more than {MAX_PAGES} pages of {PAGE_SIZE}: window not read to its end"
        return out

    def _page(self, out: Listing, query: dict[str, int]) -> list[Any] | None:
        failures = limited = 0
        while True:
            self._seen.last = _Seen()
            out.requests += 1
            try:
                doc = self._client.payment.all(query, timeout=self.timeout_s)
            except Exception as exc:  # the SDK raises its own errors, requests' and JSON decoding's
                seen: _Seen = self._seen.last
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                if seen.status == 429:
                    out.rate_limited += 1
                    limited += 1
                    if limited >= self.rate_limit_attempts:
                        out.error = f"rate-limited {limited} times in a row at skip={query['skip']}"
                        return None
                    delay = _retry_after(seen.retry_after, self._backoff(limited))
                    log.warning("razorpay rate limit (429) at skip=%d: waiting %.1f s", query["skip"], delay)
                elif seen.status == 0 or seen.status >= 500:
                    out.server_errors += 1
                    failures += 1
                    what = f"HTTP {seen.status}" if seen.status else "no answer"
                    if failures >= self.attempts:
                        out.error = f"{what} {failures} times at skip={query['skip']}: {reason}"
                        return None
                    delay = self._backoff(failures)
                    log.warning(
                        "razorpay %s at skip=%d (%s): retry in %.1f s", what, query["skip"], reason, delay
                    )
                else:
                    out.error = f"refused: HTTP {seen.status}: {reason}"
                    return None
                if self._wait(delay):
                    out.error = "stopped while waiting to retry"
                    return None
                continue
            items = doc.get("items") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                out.error = f"unexpected answer at skip={query['skip']}: no items list"
                return None
            return items

    def _backoff(self, n: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (n - 1)))


def _retry_after(value: str | None, default: float) -> float:
    """Retry-After in seconds (the HTTP-date form is not used by Razorpay: treated as absent)."""
    if value is not None and value.strip().isdigit():
        return float(min(int(value.strip()), 300))
    return default
