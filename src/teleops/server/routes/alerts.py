"""POST /api/v1/alerts/{source}: authenticate, cap, parse, commit, then answer.

The hottest route of the controller. `IngestFastPath` (an ASGI middleware) serves it before FastAPI's
router, dependency solving and exception middleware, which cost more than the ingest itself under load
(py-spy profile of B1 in docs/benchmarks.md); the FastAPI route below stays as the documented contract
(OpenAPI) and runs the same `receive_alerts` for any request the fast path leaves alone.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from teleops.server.auth import VERIFIED_INGEST_TOKEN, credential_from, services_of
from teleops.server.body_token import BODY_TOKEN
from teleops.server.ingest_limits import IngestLimits, Throttled
from teleops.server.json_body import BadJSON, loads_strict
from teleops.server.metrics import Metrics
from teleops.server.services import Services
from teleops.sources.payload import PayloadError
from teleops.sources.registry import SOURCES, get_source
from teleops.store.database import StorageUnavailable
from teleops.store.tokens import TokenKind, TokenRecord

__all__ = ["IngestFastPath", "router", "unauthorized"]

log = structlog.get_logger(__name__)
router = APIRouter(tags=["alerts"])

_SOURCE_NAMES = [source.name for source in SOURCES]
_PREFIX = "/api/v1/alerts/"
ROUTE_TEMPLATE = _PREFIX + "{source}"


class _TooLarge(Exception):
    pass


def unauthorized(metrics: Metrics, source: str) -> JSONResponse:
    """The 401 for a sender without a valid ingest token (counted in teleops_alerts_rejected_total)."""
    metrics.alerts_rejected.labels(source, "401").inc()
    return JSONResponse(
        {
            "detail": "missing or invalid ingest token; create one with `teleops token create ingest NAME` "
            "and send it as `Authorization: Bearer TOKEN`"
        },
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def ingest_limits_of(request: Request, services: Services) -> IngestLimits:
    """This app's rate limiter, built on first use for the services of the running lifespan."""
    state = request.app.state
    limits: IngestLimits | None = getattr(state, "ingest_limits", None)
    if limits is None or limits.ingest is not services.ingest:
        limits = IngestLimits(
            services.settings.ingest, ingest=services.ingest, metrics=services.metrics, clock=services.clock
        )
        state.ingest_limits = limits
    return limits


def too_many(token: str, source: str, refusal: Throttled) -> JSONResponse:
    """The 429 for a token over its rate limit (counted by IngestLimits.check)."""
    limit = refusal.limit
    return JSONResponse(
        {
            "detail": f"ingest token {token!r} is over its {source} rate limit ({limit.alerts} alerts per "
            f"{limit.per}, burst {limit.capacity}); nothing was stored, retry after {refusal.retry_after_s} s. "
            f"Admins are paged (incident IngestThrottled:{token}); if this rate is expected, raise "
            f"ingest.tokens.{token} or ingest.limits.{source}",
            "retry_after": refusal.retry_after_s,
        },
        status_code=429,
        headers={"Retry-After": str(refusal.retry_after_s)},
    )


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, refusing (without reading on) as soon as it passes `cap` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > cap:
            raise _TooLarge
    return bytes(chunks)


@router.post(
    ROUTE_TEMPLATE,
    summary="Receive alerts from a monitoring sender",
    description="Source is one of: " + ", ".join(_SOURCE_NAMES) + ". Answers 200 only after the alerts "
    "are committed; 503 when storage is unavailable (senders retry 5xx); 429 with Retry-After when the ingest "
    "token is over its rate limit.",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    },
    responses={
        400: {"description": "Malformed JSON"},
        401: {"description": "Missing or wrong ingest token"},
        404: {"description": "Unknown source"},
        413: {"description": "Body over the size cap"},
        422: {"description": "JSON that this source does not send; `field` names the path"},
        429: {"description": "The ingest token is over its rate limit (ingest.limits); see Retry-After"},
        503: {"description": "Storage unavailable; retry"},
    },
)
async def receive_alerts(source: str, request: Request) -> JSONResponse:
    services = services_of(request)
    metrics = services.metrics
    spec = get_source(source)
    if spec is None:
        return _error(404, f"unknown alert source {source[:40]!r}; use one of: {', '.join(_SOURCE_NAMES)}")
    secret = credential_from(request)
    token: TokenRecord | None = request.scope.get(VERIFIED_INGEST_TOKEN)  # the front door checked it already
    if token is None and secret:
        token = await services.tokens.verify(TokenKind.INGEST, secret)
    if token is None and (secret is not None or spec.token_field is None):
        return unauthorized(metrics, source)  # checked before reading the body
    limits = ingest_limits_of(request, services)
    if token is not None and (throttled := await limits.check(token.name, source)) is not None:
        return too_many(token.name, source, throttled)  # before reading the body: a flood costs no parsing
    cap = services.settings.server.max_body_bytes
    try:
        body = await _read_capped(request, cap)
    except _TooLarge:
        metrics.alerts_rejected.labels(source, "413").inc()
        return _error(413, f"body is larger than {cap} bytes (server.max_body_bytes); split the batch")
    except ClientDisconnect:
        return _error(400, "client disconnected before sending the whole body")
    try:
        payload = loads_strict(body)
    except BadJSON as exc:
        if secret is None:  # nothing is said about the body to a caller who has not authenticated
            return unauthorized(metrics, source)
        metrics.alerts_rejected.labels(source, "400").inc()
        return _error(400, str(exc))
    body_key = request.scope.get(BODY_TOKEN)  # the front door authenticated the body's first `routing_key`
    if body_key is not None and not _names_key(payload, spec.token_field, body_key):
        return unauthorized(metrics, source)  # a body cannot authenticate with one key and carry another
    if token is None:  # the sender authenticates in the body (spec.token_field); no front door in front
        in_body = payload.get(spec.token_field) if isinstance(payload, dict) and spec.token_field else None
        token = await services.tokens.verify(TokenKind.INGEST, in_body) if isinstance(in_body, str) else None
        if token is None:
            return unauthorized(metrics, source)
        if (throttled := await limits.check(token.name, source)) is not None:
            return too_many(token.name, source, throttled)
    try:
        parsed = spec.parse(payload)
    except PayloadError as exc:
        metrics.alerts_rejected.labels(source, "422").inc()
        return _error(422, f"not a {spec.title} payload: {exc}", field=exc.path)
    limits.charge(token.name, source, len(parsed))
    try:
        outcomes = await services.ingest.submit(parsed)
    except StorageUnavailable as exc:
        metrics.alerts_rejected.labels(source, "503").inc()
        log.warning("alerts.storage_unavailable", source=source, error=str(exc))
        return JSONResponse(
            {"detail": f"storage unavailable ({exc}); nothing was stored, retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    metrics.count_received(source, parsed)
    return JSONResponse(
        {
            "received": len(parsed),
            "results": [{"incident_id": o.incident_id, "outcome": o.outcome.value} for o in outcomes],
        }
    )


def _names_key(payload: object, field: str | None, key: str) -> bool:
    """True when the parsed body's `field` is exactly `key` (the one server/body_token.py found and verified)."""
    value = payload.get(field) if isinstance(payload, dict) and field else None
    return isinstance(value, str) and hmac.compare_digest(value.encode(), key.encode())


class IngestFastPath:
    """Serves `POST /api/v1/alerts/{source}` with `receive_alerts` directly; everything else goes on to `app`.

    Same behaviour and errors as the FastAPI route (it is the same function), without the router's path
    matching, dependency solving and per-request exit stacks. It records the request latency itself under
    the route template, as `_LatencyMiddleware` would.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = _fast_source(scope)
        if source is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        try:
            response = await receive_alerts(source, request)
            await response(scope, receive, send)
        finally:
            services = getattr(scope["app"].state, "services", None)
            if services is not None:
                services.metrics.observe_latency(ROUTE_TEMPLATE, "POST", time.perf_counter() - started)


def _fast_source(scope: Scope) -> str | None:
    """The `{source}` of a request the fast path serves, or None to leave it to the router."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path") or "app" not in scope:
        return None
    path: str = scope["path"]
    if not path.startswith(_PREFIX):
        return None
    source = path[len(_PREFIX) :]
    if not source or "/" in source:
        return None  # FastAPI answers these (404, trailing-slash redirect) as before
    return source
