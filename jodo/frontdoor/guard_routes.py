"""The disconnect guard's admin API (admin token), over the node's guard store.

::

    GET  /v1/disconnects?status=held&limit=50     T admin  the kill switch and the latest waves
    GET  /v1/disconnects/waves/{wave_id}          T admin  one wave: members kept, approvals
    POST /v1/disconnects/waves/{wave_id}/approve  T admin  {"approver": "name"}
    POST /v1/disconnects/pause                    T admin  {"by": "name", "reason": "..."}
    POST /v1/disconnects/resume                   T admin  {"by": "name", "reason": "..."}

The gateways read the store on every tick (actors/guard_shell.py), so an approval or a pause is in
force within one gateway tick (at most 0.5 s) and survives any restart: it is a row. Every approval
and switch is a row that is never changed (who, when, through what) and a log line here. The admin
token authenticates the caller; the name in the body is who they say they are (one shared admin
token cannot tell two people apart: distinct approvers are distinct names).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiohttp import web

from domain.guard import ApprovalKind
from jodo.errors import MalformedRequest, RequestRefused
from jodo.frontdoor.app import CONFIG, _authorize, _json, json_body
from storage.sqlite_guard import GuardStore
from telemetry import metrics

__all__ = ["add_guard_routes"]

log = logging.getLogger("jodo.guard")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@\-]{0,63}$")
_WAVE_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,31}\.[0-9]{1,12}$")
_STATUSES = ("held", "approved", "released")


def add_guard_routes(app: web.Application) -> None:
    app.router.add_get("/v1/disconnects", _list)
    app.router.add_get("/v1/disconnects/waves/{wave_id}", _show)
    app.router.add_post("/v1/disconnects/waves/{wave_id}/approve", _approve)
    app.router.add_post("/v1/disconnects/pause", _pause)
    app.router.add_post("/v1/disconnects/resume", _resume)


def _store(request: web.Request) -> GuardStore:
    return GuardStore.in_dir(request.app[CONFIG].node.data_dir.resolve())


async def _with_store(request: web.Request, work: Any) -> Any:
    def run() -> Any:
        with _store(request) as store:
            return work(store)

    return await asyncio.to_thread(run)


async def _body(request: web.Request, *keys: str) -> dict[str, str]:
    doc = await json_body(request)
    if not isinstance(doc, dict) or not set(doc) <= set(keys):
        raise MalformedRequest(f"expected a JSON object with {', '.join(keys)}", where="body")
    for key, value in doc.items():
        if not isinstance(value, str):
            raise MalformedRequest(f"{key} must be a string", where=f"body.{key}")
    return {k: str(v) for k, v in doc.items()}


def _name(doc: dict[str, str], key: str) -> str:
    name = doc.get(key, "").strip()
    if not _NAME.match(name):
        raise MalformedRequest(f"{key} must name a person: 1-64 letters, digits, space . _ @ -",
                               where=f"body.{key}")
    return name


def _wave_id(request: web.Request) -> str:
    wave_id = request.match_info["wave_id"]
    if not _WAVE_ID.match(wave_id):
        raise MalformedRequest("a wave id is <head-end>.<number>, e.g. hes-sim.3", where="path.wave_id")
    return wave_id


def _switch_doc(store: GuardStore) -> dict[str, Any]:
    s = store.switch()
    return {"paused": s.paused, "by": s.by, "at": s.at, "reason": s.reason}


async def _list(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    status = request.query.get("status")
    if status is not None and status not in _STATUSES:
        raise MalformedRequest(f"status must be one of {', '.join(_STATUSES)}", where="query.status")
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise MalformedRequest("limit must be an integer 1..1000", where="query.limit")
    guard = request.app[CONFIG].disconnects
    doc = await _with_store(request, lambda s: {
        "guard": guard.guard, "approvals_required": guard.approvals_required, "switch": _switch_doc(s),
        "waves": s.waves(limit=int(raw), status=status),
    })
    return _json(200, doc)


async def _show(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    wave_id = _wave_id(request)
    doc = await _with_store(request, lambda s: s.wave(wave_id))
    if doc is None:
        raise RequestRefused(404, "not_found", f"no disconnect wave {wave_id}", where="path.wave_id")
    return _json(200, doc)


async def _approve(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    wave_id = _wave_id(request)
    approver = _name(await _body(request, "approver"), "approver")
    required = config.disconnects.approvals_required

    def work(store: GuardStore) -> tuple[Any, Any]:
        outcome = store.approve(wave_id, approver, at=time.time(), required=required, via="admin-api")
        return outcome, store.wave(wave_id)

    outcome, wave = await _with_store(request, work)
    if outcome is None:
        raise RequestRefused(404, "not_found", f"no disconnect wave {wave_id}", where="path.wave_id")
    if outcome.kind in (ApprovalKind.NOT_HELD, ApprovalKind.DUPLICATE):
        metrics.disconnect_approval("refused")
        log.warning("disconnect wave approval refused",
                    extra={"wave_id": wave_id, "approver": approver, "detail": outcome.detail})
        raise RequestRefused(409, str(outcome.kind), outcome.detail, where="path.wave_id")
    metrics.disconnect_approval(str(outcome.kind))
    log.warning("disconnect wave approval recorded", extra={
        "wave_id": wave_id, "approver": approver, "outcome": str(outcome.kind),
        "approvers": list(outcome.approvers), "size": wave["size"] if wave else None})
    return _json(200, {"outcome": str(outcome.kind), "detail": outcome.detail,
                       "approvers": list(outcome.approvers), "wave": wave})


async def _switch(request: web.Request, paused: bool) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    doc = await _body(request, "by", "reason")
    by = _name(doc, "by")
    reason = doc.get("reason", "")[:500]
    action = "pause" if paused else "resume"
    switched = await _with_store(
        request, lambda s: s.set_paused(paused, by=by, at=time.time(), reason=reason, via="admin-api"))
    metrics.disconnect_switch(action)
    log.warning("automatic disconnections %s", "paused" if paused else "resumed",
                extra={"by": by, "reason": reason})
    return _json(200, {"paused": switched.paused, "by": switched.by, "at": switched.at,
                       "reason": switched.reason})


async def _pause(request: web.Request) -> web.Response:
    return await _switch(request, True)


async def _resume(request: web.Request) -> web.Response:
    return await _switch(request, False)
