"""The aiohttp application: routes, authentication, body limits and JSON errors.

Routes (``T`` = bearer token from ``[tokens]``: ``Authorization: Bearer <token>``)::

    POST /v1/webhooks/{gateway}      gateway signature       one payment; 200 only once durable
    POST /v1/payments                T payments              JSON array of payments; per-item results
    GET  /v1/meters/{account}        T admin                 meter state
    GET  /v1/meters/{account}/history?limit=100   T admin    latest events, newest first
    GET  /v1/payments/{payment_id}   T admin                 trace of one payment
    GET  /v1/admin/messages[/{type}] T admin                 injectable messages: fields, types, defaults
    POST /v1/admin/inject            T admin                 {"type", "fields"} JSON, or msgpack bytes
    POST /v1/admin/meter-commands    T admin                 [{"type", "fields"}, ...] JSON, or msgpack
                                                             (codec.encode_many); per-item refusals
    POST /v1/admin/fault             T admin                 {"kind", "target", "on"}
    POST /v1/admin/reconcile         T admin                 {"gateway", "from", "to", "dry_run"}
    GET  /v1/status                  T admin                 node summary
    /v1/disconnects...               T admin                 the disconnect guard (guard_routes.py)
    GET  /healthz  /readyz  /metrics                         liveness, readiness (503 until ready), Prometheus

Every error is ``{"error": <code>, "detail": <what and where>}`` (``"where"`` too when known), with
the status from `jodo.errors`; 503 carries ``Retry-After``. Input never causes a 500: a 500 means a bug,
logged with its traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from domain.commands import MeterCommand
from jodo import schema, values
from jodo.config import Config, Secret
from jodo.errors import BodyTooLarge, InvalidPayment, MalformedRequest, RequestRefused, WebhookError
from jodo.forward import FORWARDED_HEADER, forwarded
from jodo.frontdoor.backend import Backend, Saturated, result_word
from jodo.frontdoor.batcher import MicroBatcher
from jodo.reconcile.service import Reconciler
from jodo.webhooks import (
    IgnoredEvent,
    check_json_content_type,
    find_gateway,
    parse_json,
    parse_webhook,
    payment_from_object,
)
from protocols import codec
from protocols.errors import CodecError
from protocols.payments import PaymentReceived, PaymentResultCode, validate_account, validate_payment_id

__all__ = ["BACKEND", "BATCHER", "CONFIG", "WebhookObserver", "build_app", "start_site"]

log = logging.getLogger("jodo.frontdoor")

#: Called after every webhook answer with (gateway name as in the URL, HTTP status); e.g. metrics.
WebhookObserver = Callable[[str, int], None]

CONFIG = web.AppKey("config", Config)
BACKEND = web.AppKey("backend", Backend)
BATCHER = web.AppKey("batcher", MicroBatcher)
_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
_OBSERVER: web.AppKey[WebhookObserver] = web.AppKey("observer")

MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"})
BATCH_GATEWAY = "api"  # PaymentReceived.gateway for /v1/payments items that name none
_HISTORY_MAX = 1000
#: A batch of meter commands is journaled before the answer: 10 000 registrations take seconds.
COMMANDS_TIMEOUT_S = 120.0
_METER_COMMANDS: tuple[type[Any], ...] = typing.get_args(MeterCommand)
T = TypeVar("T")


def build_app(
    config: Config,
    backend: Backend,
    *,
    clock: Callable[[], float] = time.time,
    on_webhook: WebhookObserver | None = None,
    reconciler: Reconciler | None = None,
) -> web.Application:
    """The front door for ``backend``; ``clock`` (unix seconds) is injected for signature tolerance tests."""
    http = config.http
    app = web.Application(
        middlewares=[_errors_as_json],
        client_max_size=max(http.max_body_bytes, http.max_batch_body_bytes),
    )
    app[CONFIG] = config
    app[BACKEND] = backend
    app[_CLOCK] = clock
    app[_OBSERVER] = on_webhook or (lambda gateway, status: None)
    app[BATCHER] = MicroBatcher(
        backend.submit_payments,
        window_s=http.batch_window_ms / 1000.0,
        max_items=http.batch_max_items,
        max_in_flight=http.max_in_flight,
        timeout_s=http.submit_timeout_s,
        max_batches=http.max_batches_in_flight,
    )
    app.on_cleanup.append(_close_batcher)
    app.router.add_post("/v1/webhooks/{gateway}", _webhook)
    app.router.add_post("/v1/payments", _payments)
    app.router.add_get("/v1/meters/{account}", _meter)
    app.router.add_get("/v1/meters/{account}/history", _meter_history)
    app.router.add_get("/v1/payments/{payment_id:.+}", _payment_trace)
    app.router.add_get("/v1/admin/messages", _messages)
    app.router.add_get("/v1/admin/messages/{type}", _message_schema)
    app.router.add_post("/v1/admin/inject", _inject)
    app.router.add_post("/v1/admin/meter-commands", _meter_commands)
    app.router.add_post("/v1/admin/fault", _fault)
    app.router.add_post("/v1/admin/clock", _clock)
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/v1/cluster", _cluster)
    app.router.add_post("/v1/cluster/drain", _cluster_drain)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    from jodo.reconcile.http import attach_reconciler  # it imports this module's keys

    attach_reconciler(app, reconciler)  # POST /v1/admin/reconcile and the periodic pulls
    from jodo.frontdoor.guard_routes import add_guard_routes  # (it imports this module's helpers)

    add_guard_routes(app)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0 = any free port); returns the runner (``await runner.cleanup()``)
    and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def _close_batcher(app: web.Application) -> None:
    await app[BATCHER].close()


# ---------------------------------------------------------------- plumbing


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(dict(body), status=status, headers=headers)


def _unavailable(reason: str, retry_after_s: int = 1) -> web.Response:
    return _json(
        503,
        {"error": "unavailable", "detail": reason, "where": "node"},
        {"Retry-After": str(max(1, int(retry_after_s)))},
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
#: Where an error lies when the code that refused did not say: every error body has the same shape.
_WHERE_BY_STATUS = {401: "header.Authorization", 403: "header.Authorization", 404: "path", 405: "method",
                    413: "body", 503: "node"}


def _where(status: int, where: str | None) -> str:
    return where or _WHERE_BY_STATUS.get(status, "request")


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # a request another node forwarded to us (cluster) is never forwarded again
    mark = forwarded.set(FORWARDED_HEADER in request.headers)
    try:
        return await handler(request)
    except WebhookError as exc:
        return _json(exc.status, exc.to_json())
    except RequestRefused as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="jodo"'
        body = {"error": exc.code, "detail": exc.detail, "where": _where(exc.status, exc.where)}
        return _json(exc.status, body, headers)
    except web.HTTPException as exc:  # aiohttp's own: no such route, wrong method, body over the cap
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        code = _HTTP_CODES.get(exc.status, "http_error")
        return _json(
            exc.status, {"error": code, "detail": exc.reason, "where": _where(exc.status, None)}, headers
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("bug while serving %s %s", request.method, request.path)
        return _json(500, {"error": "internal", "detail": "unexpected server error; see the server log",
                           "where": "server"})
    finally:
        forwarded.reset(mark)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"{declared} bytes; the limit is {limit}", where="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes", where="body")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: web.Request, limit: int | None = None) -> Any:
    """The request's JSON document: 415 unless ``application/json``, 413 past ``limit`` bytes (default
    ``[http] max_body_bytes``), 400 naming where it is not JSON."""
    check_json_content_type(request.headers.get("Content-Type"))
    return parse_json(await _read_body(request, limit or request.app[CONFIG].http.max_body_bytes))


def _authorize(request: web.Request, token: Secret | None, api: str) -> None:
    if token is None:
        raise RequestRefused(403, "disabled", f"the {api} API is disabled: no [tokens] {api} configured")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise RequestRefused(401, "unauthorized", "send Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.reveal().encode()):
        raise RequestRefused(401, "unauthorized", f"wrong {api} token")


async def _backend_call(request: web.Request, call: Awaitable[T]) -> T:
    timeout = request.app[CONFIG].http.submit_timeout_s
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise RequestRefused(503, "unavailable", f"the node did not answer within {timeout:g} s") from None


def _require_ready(request: web.Request) -> None:
    if not request.app[BACKEND].ready():
        raise RequestRefused(503, "unavailable", "the node is not ready (starting or recovering)")


# ---------------------------------------------------------------- payments


async def _webhook(request: web.Request) -> web.Response:
    name = request.match_info["gateway"]
    response = await _webhook_response(request, name)
    try:
        request.app[_OBSERVER](name, response.status)
    except Exception:  # an observer's bug must not turn a durable payment into an error
        log.exception("webhook observer failed")
    return response


async def _webhook_response(request: web.Request, name: str) -> web.Response:
    config = request.app[CONFIG]
    try:
        gateway = find_gateway(config.gateways, name)
        if not request.app[BACKEND].ready():
            return _unavailable("the node is not ready (starting or recovering)")
        body = await _read_body(request, config.http.max_body_bytes)
        outcome = parse_webhook(
            gateway, request.headers, body, request.app[_CLOCK](), max_body_bytes=config.http.max_body_bytes
        )
    except WebhookError as exc:
        log.info("webhook %r refused: %d %s at %s", name[:32], exc.status, exc.code, exc.where)
        return _json(exc.status, exc.to_json())
    if isinstance(outcome, IgnoredEvent):
        return _json(200, {"result": "ignored", "event": outcome.event, "payment_id": None})
    answer = await request.app[BATCHER].submit(outcome)
    if isinstance(answer, Saturated):
        return _unavailable(answer.reason, answer.retry_after_s)
    if answer.code is PaymentResultCode.REJECTED:
        detail = answer.reason or "the payment desk rejected the payment"
        return _json(422, {"error": "rejected", "detail": detail, "payment_id": outcome.payment_id})
    return _json(200, {"result": result_word(answer), "payment_id": outcome.payment_id})


async def _payments(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    _authorize(request, config.tokens.payments, "payments")
    _require_ready(request)
    doc = await json_body(request, config.http.max_batch_body_bytes)
    if not isinstance(doc, list):
        raise MalformedRequest("the body must be a JSON array of payments", where="body")
    if len(doc) > config.http.max_batch_items:
        raise BodyTooLarge(f"{len(doc)} items; the limit is {config.http.max_batch_items}", where="body")
    now = request.app[_CLOCK]()
    items: list[dict[str, Any]] = []
    valid: list[tuple[int, PaymentReceived]] = []
    for i, obj in enumerate(doc):
        given_id = obj.get("payment_id") if isinstance(obj, dict) else None
        items.append({"index": i, "payment_id": given_id if isinstance(given_id, str) else None})
        try:
            payment = payment_from_object(
                obj, gateway=BATCH_GATEWAY, received_at=now, where=f"[{i}]", allow_gateway_field=True
            )
        except WebhookError as exc:
            items[i] |= {"result": "rejected", **exc.to_json()}
            continue
        valid.append((i, payment))
    if valid:
        payments = [p for _, p in valid]
        outcome = await request.app[BATCHER].submit_batch(payments)
        if isinstance(outcome, Saturated):
            return _unavailable(outcome.reason, outcome.retry_after_s)
        for (i, _), result in zip(valid, outcome, strict=True):
            items[i]["result"] = result_word(result)
            if result.code is PaymentResultCode.REJECTED:
                items[i] |= {"error": "rejected", "detail": result.reason}
    counts = dict.fromkeys(("accepted", "unmatched", "duplicate", "rejected"), 0)
    for item in items:
        counts[item["result"]] = counts.get(item["result"], 0) + 1
    return _json(200, {"results": items, **counts})


# ---------------------------------------------------------------- admin


def _valid(check: Callable[[str], None], value: str, where: str) -> str:
    try:
        check(value)
    except ValueError as exc:
        raise MalformedRequest(str(exc), where=where) from None
    return value


async def _meter(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    account = _valid(validate_account, request.match_info["account"], "path")
    state = await _backend_call(request, request.app[BACKEND].meter(account))
    if state is None:
        raise RequestRefused(404, "not_found", f"no meter has account {account}", where="path.account")
    return _json(200, state)


async def _meter_history(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    account = _valid(validate_account, request.match_info["account"], "path")
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= _HISTORY_MAX:
        raise MalformedRequest(f"limit must be an integer 1..{_HISTORY_MAX}", where="query.limit")
    events = await _backend_call(request, request.app[BACKEND].meter_history(account, limit=int(raw)))
    if events is None:
        raise RequestRefused(404, "not_found", f"no meter has account {account}", where="path.account")
    return _json(200, {"account": account, "events": [dict(e) for e in events]})


async def _payment_trace(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    payment_id = _valid(validate_payment_id, request.match_info["payment_id"], "path")
    trace = await _backend_call(request, request.app[BACKEND].payment_trace(payment_id))
    if trace is None:
        raise RequestRefused(
            404, "not_found", f"no payment {payment_id} was ever received", where="path.payment_id"
        )
    return _json(200, trace)


async def _inject(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    body = await _read_body(request, config.http.max_batch_body_bytes)
    message: Any
    defaults: list[dict[str, Any]] = []
    try:
        if media in MSGPACK_TYPES:
            message = codec.decode(body)
        else:
            check_json_content_type(request.headers.get("Content-Type"))
            built = _typed_in_message(request, parse_json(body))
            message, defaults = built.message, built.defaults_json()
    except CodecError as exc:
        raise MalformedRequest(str(exc), where="body") from None
    result = await _backend_call(request, request.app[BACKEND].inject(message))
    return _json(200, {"injected": type(message).__name__, **result,
                       **({"defaults_used": defaults} if defaults else {})})


def _head_ends(request: web.Request) -> list[str]:
    return [h.name for h in request.app[CONFIG].head_ends]


def _typed_in_message(request: web.Request, doc: Any) -> schema.Built:
    """``{"type", "fields"}`` as a person writes it (`jodo.values` rules), defaults filled."""
    if not isinstance(doc, dict) or set(doc) != {"type", "fields"}:
        raise MalformedRequest('expected {"type": <message type>, "fields": {...}}', where="body")
    if not isinstance(doc["type"], str):
        raise MalformedRequest("must be a message type name", where="type")
    try:
        return schema.build(doc["type"], doc["fields"], head_ends=_head_ends(request),
                            now=request.app[_CLOCK]())
    except schema.FieldError as exc:
        raise MalformedRequest(str(exc), where=f"fields.{exc.field}" if exc.field else "type") from None


async def _messages(request: web.Request) -> web.Response:
    """Every injectable message's schema (what `jodo inject message TYPE --help` prints)."""
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    now = request.app[_CLOCK]()
    schemas = schema.injectable_schemas(head_ends=_head_ends(request), now=now)
    return _json(200, {"messages": [s.to_json() for s in schemas], "values": schema.VALUE_RULES})


async def _message_schema(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    try:
        found = schema.message_schema(request.match_info["type"], head_ends=_head_ends(request),
                                      now=request.app[_CLOCK]())
    except schema.FieldError as exc:
        raise RequestRefused(404, "not_found", str(exc)) from None
    return _json(200, {**found.to_json(), "values": schema.VALUE_RULES})


def _message_from_json(doc: Any, where: str = "") -> Any:
    if not isinstance(doc, dict) or set(doc) != {"type", "fields"}:
        raise MalformedRequest('expected {"type": <message type>, "fields": {...}}', where=where or "body")
    if not isinstance(doc["type"], str):
        raise MalformedRequest("must be a message type name", where=f"{where}.type" if where else "type")
    return codec.from_fields(doc["type"], doc["fields"])


async def _meter_commands(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    _require_ready(request)
    media = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    body = await _read_body(request, config.http.max_batch_body_bytes)
    commands: list[Any] = []
    if media in MSGPACK_TYPES:
        try:
            commands = codec.decode_many(body)
        except CodecError as exc:
            raise MalformedRequest(str(exc), where="body") from None
    else:
        check_json_content_type(request.headers.get("Content-Type"))
        doc = parse_json(body)
        if not isinstance(doc, list):
            raise MalformedRequest('expected a JSON array of {"type", "fields"} objects', where="body")
        for i, item in enumerate(doc):
            try:
                commands.append(_message_from_json(item, f"[{i}]"))
            except CodecError as exc:
                raise MalformedRequest(str(exc), where=f"[{i}]") from None
    if len(commands) > config.http.max_batch_items:
        limit = config.http.max_batch_items
        raise BodyTooLarge(f"{len(commands)} commands; the limit is {limit}", where="body")
    for i, command in enumerate(commands):
        if not isinstance(command, _METER_COMMANDS):
            names = ", ".join(c.__name__ for c in _METER_COMMANDS)
            raise InvalidPayment(f"{type(command).__name__} is not a meter command ({names})", where=f"[{i}]")
    try:
        rejected = await asyncio.wait_for(request.app[BACKEND].send_commands(commands), COMMANDS_TIMEOUT_S)
    except TimeoutError:
        raise RequestRefused(503, "unavailable", "the shards did not answer in time; retry") from None
    return _json(200, {"count": len(commands), "accepted": len(commands) - len(rejected),
                       "rejected": [{"index": i, "reason": reason} for i, reason in rejected]})


async def _fault(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    doc = await json_body(request)
    if not isinstance(doc, dict) or set(doc) != {"kind", "target", "on"}:
        raise MalformedRequest('expected {"kind": str, "target": str, "on": bool}', where="body")
    kind, target, on = doc["kind"], doc["target"], doc["on"]
    if not isinstance(kind, str) or not isinstance(target, str) or not isinstance(on, bool):
        raise MalformedRequest("kind and target must be strings, on a boolean", where="body")
    result = await _backend_call(request, request.app[BACKEND].fault(kind, target, on))
    return _json(200, result)


async def _clock(request: web.Request) -> web.Response:
    """A lab node's clock: ``{"to": <unix seconds or ISO date-time, IST without offset>}`` or
    ``{"by": "16d"}``; 409 on a node that runs the wall clock."""
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    doc = await json_body(request)
    if not isinstance(doc, dict) or len(doc) != 1 or not set(doc) <= {"to", "by"}:
        raise MalformedRequest('expected {"to": <unix seconds or ISO date-time>} or {"by": "16d"}',
                               where="body")
    backend = request.app[BACKEND]
    try:
        if "to" in doc:
            call = backend.set_clock(values.parse_datetime(doc["to"]))
        else:
            call = backend.set_clock(by=values.parse_duration(doc["by"]))
    except values.BadValue as exc:
        field = "to" if "to" in doc else "by"
        raise RequestRefused(422, "bad_value", str(exc), where=f"body.{field}") from None
    return _json(200, await _backend_call(request, call))


async def _status(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    status = await _backend_call(request, request.app[BACKEND].status())
    stats = request.app[BATCHER].stats
    batcher = request.app[BATCHER]
    front_door = {"batches": stats.batches, "items": stats.items, "largest_batch": stats.largest,
                  "saturated": stats.saturated, "queued": batcher.queued, "running": batcher.running}
    return _json(200, {**status, "front_door": front_door})


async def _cluster(request: web.Request) -> web.Response:
    _authorize(request, request.app[CONFIG].tokens.admin, "admin")
    return _json(200, await _backend_call(request, request.app[BACKEND].cluster()))


async def _cluster_drain(request: web.Request) -> web.Response:
    """``{"node": "<node id>", "draining": true|false}``: that member hands its groups over (or
    takes groups again). Any member's front door can drain any member: the mark is in the database."""
    config = request.app[CONFIG]
    _authorize(request, config.tokens.admin, "admin")
    doc = await json_body(request)
    if not isinstance(doc, dict) or not set(doc) <= {"node", "draining"} or "node" not in doc:
        raise MalformedRequest('expected {"node": str, "draining": bool (default true)}', where="body")
    node, draining = doc["node"], doc.get("draining", True)
    if not isinstance(node, str) or not node or not isinstance(draining, bool):
        raise MalformedRequest("node must be a non-empty string, draining a boolean", where="body")
    backend = request.app[BACKEND]
    current = await _backend_call(request, backend.cluster())
    known = {m.get("node_id") for m in current.get("members", []) if isinstance(m, dict)}
    if node not in known:  # nothing is marked for a name no member has
        raise RequestRefused(404, "not_found",
                             f"no cluster member {node!r}; members: {sorted(map(str, known))}")
    return _json(200, await _backend_call(request, backend.cluster(drain=node, draining=draining)))


# ---------------------------------------------------------------- probes


async def _healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[BACKEND].ready():
        return _json(200, {"status": "ready"})
    return _unavailable("the node is not ready (starting or recovering)")


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[BACKEND].metrics()
    return web.Response(body=body, headers={"Content-Type": content_type})
