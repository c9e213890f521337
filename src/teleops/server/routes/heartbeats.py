"""Heartbeats over HTTP: define, list and delete them (API tokens), and ping them (ingest tokens).

`GET|POST /api/v1/heartbeats/{name}/ping` takes the same ingest token as alert webhooks (`Authorization: Bearer`,
or Basic with the token as password), so cron can `curl` it; its body is ignored (an Alertmanager webhook's JSON
is fine: the Watchdog recipe in docs/heartbeats.md). `GET|POST /v2/heartbeats/{name}/ping` answers like
Opsgenie's Heartbeat API and accepts its `Authorization: GenieKey <key>` form, so a job that pings Opsgenie
switches by changing the host name and putting an ingest token where the API key was. The front door
(server/front_door.py) checks the token before any body is read.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from teleops.config.heartbeats import HeartbeatSpec
from teleops.server.auth import VERIFIED_INGEST_TOKEN, Caller, credential_from, require_api_caller, services_of
from teleops.server.heartbeats import HeartbeatMonitor, HeartbeatView
from teleops.store.audit import AuditUnavailable
from teleops.store.database import StorageUnavailable
from teleops.store.heartbeats import HeartbeatFromConfig, HeartbeatNotFound
from teleops.store.tokens import TokenKind, TokenRecord

__all__ = ["OPSGENIE_PING_PREFIX", "PING_PREFIX", "PING_SUFFIX", "ping_secret", "ping_unauthorized", "router"]

router = APIRouter(tags=["heartbeats"])

PING_PREFIX = "/api/v1/heartbeats/"
PING_SUFFIX = "/ping"
OPSGENIE_PING_PREFIX = "/v2/heartbeats/"

HeartbeatName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=128, description="The heartbeat's name.")
]


class HeartbeatOut(BaseModel):
    name: str
    origin: str = Field(description="`config` (teleops.yaml, read-only here) or `api`.")
    interval: str
    grace: str
    severity: str
    labels: dict[str, str]
    description: str
    state: str = Field(description="`new` (never pinged), `up`, or `late` (missed; its incident is open).")
    last_ping_at: datetime | None
    due_at: datetime | None = Field(description="When it is missed without a ping; null while late.")
    late_since: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, view: HeartbeatView) -> HeartbeatOut:
        record = view.record
        return cls(
            name=record.name,
            origin=record.origin,
            interval=str(record.spec.interval),
            grace=str(record.spec.grace),
            severity=record.spec.severity,
            labels=dict(record.spec.labels),
            description=record.spec.description,
            state=view.state.value,
            last_ping_at=record.last_ping_at,
            due_at=view.due_at,
            late_since=record.late_since,
            created_at=record.created_at,
        )


class HeartbeatList(BaseModel):
    items: list[HeartbeatOut]


class OpsgeniePong(BaseModel):
    result: str
    took: float
    requestId: str  # Opsgenie's spelling


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"description": "Storage unavailable; retry"}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such heartbeat"}, **_UNAVAILABLE}
_PING_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong ingest token"},
    404: {"description": "No such heartbeat (the answer says how to define it)"},
    413: {"description": "Body over 64 KiB (the body is ignored; send none)"},
    **_UNAVAILABLE,
}


def monitor_of(request: Request) -> HeartbeatMonitor:
    monitor: HeartbeatMonitor | None = getattr(request.app.state, "heartbeats", None)
    if monitor is None:
        raise HTTPException(503, "the heartbeat monitor is still starting; retry in a few seconds")
    return monitor


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, f"storage unavailable ({exc}); nothing was changed, retry later", {"Retry-After": "5"})


def ping_secret(connection: HTTPConnection) -> str | None:
    """The ingest token of a ping: `Bearer X`, Basic with X as password, or Opsgenie's `GenieKey X`."""
    values = connection.headers.getlist("authorization")
    if len(values) == 1:
        scheme, _, value = values[0].strip().partition(" ")
        if scheme.lower() == "geniekey":
            return value.strip() or None
    return credential_from(connection)


def ping_unauthorized(path: str) -> JSONResponse:
    """The 401 for a ping without a valid ingest token (Opsgenie's shape on the /v2 path)."""
    detail = (
        "missing or invalid ingest token; create one with `teleops token create ingest NAME` and send it as "
        "`Authorization: Bearer TOKEN`"
        + (" or `Authorization: GenieKey TOKEN`" if path.startswith(OPSGENIE_PING_PREFIX) else "")
    )
    body: dict[str, Any] = {"detail": detail}
    if path.startswith(OPSGENIE_PING_PREFIX):
        body |= {"message": detail, "took": 0.0, "requestId": str(uuid.uuid4())}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _ping(request: Request, name: str) -> HeartbeatView:
    """Authenticate (unless the front door did) and record the ping. Raises HTTPException (401, 404, 503)."""
    services = services_of(request)
    token: TokenRecord | None = request.scope.get(VERIFIED_INGEST_TOKEN)
    if token is None:
        secret = ping_secret(request)
        token = await services.tokens.verify(TokenKind.INGEST, secret) if secret else None
    if token is None:
        raise HTTPException(401, "missing or invalid ingest token; see `teleops token create ingest NAME`")
    try:
        return await monitor_of(request).ping(name)
    except HeartbeatNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except StorageUnavailable as exc:
        detail = f"storage unavailable ({exc}); the ping was not recorded, retry"
        raise HTTPException(503, detail, {"Retry-After": "5"}) from exc


_PING_DOC: dict[str, Any] = {
    "response_model": HeartbeatOut,
    "summary": "Ping a heartbeat (ingest token)",
    "description": "Records that the job is alive; a late heartbeat's incident is resolved. The body is ignored.",
    "responses": _PING_RESPONSES,
}


@router.get(PING_PREFIX + "{name}" + PING_SUFFIX, operation_id="ping_heartbeat_get", **_PING_DOC)
@router.post(PING_PREFIX + "{name}" + PING_SUFFIX, operation_id="ping_heartbeat_post", **_PING_DOC)
async def ping(name: HeartbeatName, request: Request) -> HeartbeatOut:
    return HeartbeatOut.of(await _ping(request, name))


_OPSGENIE_DOC: dict[str, Any] = {
    "status_code": 202,
    "response_model": OpsgeniePong,
    "summary": "Ping a heartbeat, Opsgenie-compatible (Authorization: GenieKey <ingest token>)",
    "responses": _PING_RESPONSES,
}


@router.get(OPSGENIE_PING_PREFIX + "{name}" + PING_SUFFIX, operation_id="ping_heartbeat_opsgenie_get", **_OPSGENIE_DOC)
@router.post(
    OPSGENIE_PING_PREFIX + "{name}" + PING_SUFFIX, operation_id="ping_heartbeat_opsgenie_post", **_OPSGENIE_DOC
)
async def ping_opsgenie(name: HeartbeatName, request: Request) -> JSONResponse:
    started = time.perf_counter()
    request_id = str(uuid.uuid4())
    try:
        await _ping(request, name)
    except HTTPException as exc:
        took = round(time.perf_counter() - started, 3)
        body = {"message": exc.detail, "detail": exc.detail, "took": took, "requestId": request_id}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    took = round(time.perf_counter() - started, 3)
    return JSONResponse({"result": "PONG - Heartbeat received", "took": took, "requestId": request_id}, 202)


@router.get("/api/v1/heartbeats", response_model=HeartbeatList, responses=_UNAVAILABLE)
async def list_heartbeats(request: Request, _caller: Annotated[Caller, Depends(require_api_caller)]) -> HeartbeatList:
    try:
        views = await monitor_of(request).views()
    except StorageUnavailable as exc:
        raise _unavailable(exc) from exc
    return HeartbeatList(items=[HeartbeatOut.of(view) for view in views])


@router.get("/api/v1/heartbeats/{name}", response_model=HeartbeatOut, responses=_NOT_FOUND)
async def read_heartbeat(
    name: HeartbeatName, request: Request, _caller: Annotated[Caller, Depends(require_api_caller)]
) -> HeartbeatOut:
    monitor = monitor_of(request)
    try:
        return HeartbeatOut.of(monitor.view(await monitor.store.get(name)))
    except HeartbeatNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except StorageUnavailable as exc:
        raise _unavailable(exc) from exc


async def _require_admin(request: Request, caller: Caller, name: str) -> None:
    user = await services_of(request).users.get(caller.user)
    if user is None or user.role != "admin":
        raise HTTPException(
            403, f"only an admin may define or delete heartbeats; {caller.user!r} is not one. Ask an admin, or "
            f"add {name!r} under `heartbeats:` in teleops.yaml",
        )  # fmt: skip


_ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "The caller is not an admin"},
    409: {"description": "The heartbeat is defined in the config file; change it there"},
    **_UNAVAILABLE,
}


@router.put(
    "/api/v1/heartbeats/{name}",
    response_model=HeartbeatOut,
    responses={201: {"model": HeartbeatOut, "description": "A new heartbeat was defined"}, **_ADMIN_RESPONSES},
)
async def put_heartbeat(
    name: HeartbeatName,
    spec: Annotated[HeartbeatSpec, Body()],
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
) -> JSONResponse:
    """Define (201) or redefine (200) a heartbeat; an existing one keeps its last ping."""
    await _require_admin(request, caller, name)
    monitor = monitor_of(request)
    services = services_of(request)
    try:
        created = await monitor.store.put(name, spec, now=services.clock(), actor=caller.user, via=caller.via)
        record = await monitor.store.get(name)
    except HeartbeatFromConfig as exc:
        raise HTTPException(409, str(exc)) from exc
    except (StorageUnavailable, AuditUnavailable, HeartbeatNotFound) as exc:
        raise _unavailable(exc) from exc
    monitor.wake()
    body = HeartbeatOut.of(monitor.view(record)).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


@router.delete("/api/v1/heartbeats/{name}", status_code=204, responses={**_ADMIN_RESPONSES, **_NOT_FOUND})
async def delete_heartbeat(
    name: HeartbeatName, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> None:
    """Delete an API-defined heartbeat; the incident of a late one is resolved."""
    await _require_admin(request, caller, name)
    monitor = monitor_of(request)
    try:
        record = await monitor.store.delete(name, now=services_of(request).clock(), actor=caller.user, via=caller.via)
    except HeartbeatNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except HeartbeatFromConfig as exc:
        raise HTTPException(409, str(exc)) from exc
    except (StorageUnavailable, AuditUnavailable) as exc:
        raise _unavailable(exc) from exc
    await monitor.forget(record)
