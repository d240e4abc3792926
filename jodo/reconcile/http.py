"""The front door's part of reconciliation: ``POST /v1/admin/reconcile`` and the periodic task.

    POST /v1/admin/reconcile   T admin   {"gateway": "razorpay" | null, "from": T, "to": T,
                                          "dry_run": false}
    → 200 {"reports": [<core.Report.to_json()>, ...], "clean": bool}

``from``/``to``: unix seconds or ISO 8601 (no offset: IST), as `jodo.values.parse_datetime` reads
them; ``gateway`` null or absent: every gateway with API credentials. The answer comes when the
run has finished (it may take minutes when the gateway rate-limits). `attach_reconciler` is called
by `jodo.frontdoor.build_app`; the periodic runs start with the app and stop before its batcher.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from jodo.errors import MalformedRequest, RequestRefused
from jodo.frontdoor.app import BACKEND, BATCHER, CONFIG
from jodo.reconcile.service import Reconciler, ReconcileRefused
from jodo.values import BadValue, parse_datetime

__all__ = ["RECONCILER", "attach_reconciler"]

RECONCILER = web.AppKey("reconciler", Reconciler)
_KEYS = {"gateway", "from", "to", "dry_run"}


def attach_reconciler(app: web.Application, reconciler: Reconciler | None = None) -> Reconciler:
    """Give ``app`` its reconciler (default: one over the config's gateways and [storage])."""
    r = reconciler or Reconciler(app[CONFIG])
    r.attach(submit=app[BATCHER].submit_batch, ready=app[BACKEND].ready)
    app[RECONCILER] = r
    app.router.add_post("/v1/admin/reconcile", _reconcile)
    app.cleanup_ctx.append(_periodic)
    return r


async def _periodic(app: web.Application) -> AsyncIterator[None]:
    r = app[RECONCILER]
    task = asyncio.create_task(r.periodic(), name="reconcile")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.get_running_loop().run_in_executor(None, r.close)


def _time(doc: dict[str, Any], key: str) -> int:
    if key not in doc:
        raise MalformedRequest("required: unix seconds or an ISO 8601 date-time (no offset: IST)", where=key)
    try:
        return parse_datetime(doc[key])
    except BadValue as exc:
        raise MalformedRequest(str(exc), where=key) from None


async def _reconcile(request: web.Request) -> web.Response:
    from jodo.frontdoor.app import _authorize, json_body  # the front door's own checks, not copies

    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    doc = await json_body(request)
    if not isinstance(doc, dict) or not set(doc) <= _KEYS:
        raise MalformedRequest(f"expected an object with {', '.join(sorted(_KEYS))}", where="body")
    start, end = _time(doc, "from"), _time(doc, "to")
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise MalformedRequest("must be true or false", where="dry_run")
    gateway = doc.get("gateway")
    if gateway is not None and not isinstance(gateway, str):
        raise MalformedRequest("must be a gateway name or null", where="gateway")
    r = request.app[RECONCILER]
    names = (
        [gateway]
        if gateway is not None
        else [n for n, g in config.gateways.items() if g.format == "razorpay" and g.reconcile.has_credentials]
    )
    if not names:
        raise RequestRefused(
            409,
            "conflict",
            "no gateway has payments API credentials ([gateways.<name>.reconcile] key_id and key_secret)",
            where="gateway",
        )
    try:
        for name in names:
            r.check(name, start, end)
        reports = [(await r.run(name, start, end, dry_run=dry_run)).to_json() for name in names]
    except ReconcileRefused as exc:
        code = {404: "not_found", 409: "conflict"}.get(exc.status, "bad_request")
        raise RequestRefused(exc.status, code, exc.detail, where=exc.where) from None
    return web.json_response({"reports": reports, "clean": all(rep["clean"] for rep in reports)})
