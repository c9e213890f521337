"""Liveness, readiness (the database answers) and Prometheus metrics."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from teleops.server.auth import services_of
from teleops.store.database import StorageUnavailable
from teleops.store.incidents import count_open

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unavailable"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready to take alerts: the database answers."""
    try:
        await services_of(request).db.ping()
    except StorageUnavailable as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {exc}"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    services = services_of(request)
    # On a storage outage the gauge keeps its last value; /readyz reports the outage.
    with contextlib.suppress(StorageUnavailable):
        services.metrics.incidents_open.set(await count_open(services.db))
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
