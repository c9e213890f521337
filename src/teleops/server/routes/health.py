"""Liveness, readiness (the database answers) and Prometheus metrics."""

from __future__ import annotations

import contextlib

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from teleops.chat.input_watch import InputHealth
from teleops.server.auth import services_of
from teleops.store.database import StorageUnavailable, newest_revision
from teleops.store.incidents import count_open
from teleops.store.outbox import waiting_by_platform

__all__ = ["router"]

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unavailable or cannot be written"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready to take alerts: the database answers and can be written to (503 otherwise: a full disk, a
    read-only file, a read-only PostgreSQL standby).

    With a remote chat platform configured, `chat_inputs` says per platform whether its input is watched and
    how long it has been silent; a stalled input is listed in `problems` and the status is "degraded" — still
    200, because alerts are still taken and sent; only commands and acks from that platform are not arriving.

    `self_test` is the last self-test (server/selfwatch): each step's outcome and the dead-man's-switch pings.

    A database a newer TeleOps has migrated since this replica started (a rolling upgrade under way) is a problem
    too, "degraded" and still 200: migrations stay compatible with the previous version, so this replica keeps
    working until it is upgraded in its turn (docs/replicas.md, "Rolling upgrades").

    `replica` names this process among the replicas sharing the database, and `singletons` says which singleton
    loops it runs now ("held") and which it stands by for ("standby": another replica runs them).
    """
    services = services_of(request)
    try:
        await services.db.ping()
        cannot_write = await services.db.write_problem()
    except StorageUnavailable as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {exc}"}, status_code=503)
    if cannot_write is not None:  # it answers, but alerts and commands would not be stored
        return JSONResponse({"status": "unavailable", "detail": f"storage: {cannot_write}"}, status_code=503)
    body: dict[str, object] = {"status": "ready", "replica": services.db.replica}
    singletons = getattr(request.app.state, "singletons", None)
    if singletons is not None:
        body["singletons"] = singletons.states()
    problems: list[str] = []
    with contextlib.suppress(StorageUnavailable):  # it answered just now; a blip here is not this check's to report
        if (newer := await services.db.newer_schema()) is not None:
            problems.append(_newer_schema(request, newer))
    # A platform rejecting our token: alerts are still taken, pages to it fail over to other contact methods.
    rejected = services.chat.health.problems()
    problems += [f"{platform}: {problem}" for platform, problem in sorted(rejected.items())]
    if rejected:
        body["delivery"] = {platform: "token rejected" for platform in sorted(rejected)}
    self_watch = getattr(request.app.state, "self_watch", None)
    if self_watch is not None:  # informative only: a failed self-test never makes this 503 (docs/self-monitoring.md)
        body["self_test"] = self_watch.detail()
    healths = await services.chat.check_inputs()
    remote = [h for h in healths if h.mode != "local"]
    if remote:
        problems += [p for p in (h.problem() for h in remote) if p is not None]
        body["chat_inputs"] = {h.platform: _input_view(h) for h in remote}
    if problems:
        body["status"] = "degraded"
        body["problems"] = problems
    return JSONResponse(body)


def _newer_schema(request: Request, revision: str) -> str:
    """The problem line for a schema newer than this replica, logged once per revision found."""
    problem = (
        f"schema: the database is at revision {revision}, newer than this replica's {newest_revision()}; "
        'upgrade this replica (docs/replicas.md, "Rolling upgrades")'
    )
    if getattr(request.app.state, "newer_schema_logged", None) != revision:
        request.app.state.newer_schema_logged = revision
        log.warning("schema.newer_than_replica", revision=revision, newest=newest_revision())
    return problem


def _input_view(health: InputHealth) -> dict[str, object]:
    view: dict[str, object] = {"mode": health.mode, "watched": health.watched, "stalled": health.stalled}
    if health.watched:
        view["silent_s"] = round(health.silent_s, 1)
        view["stall_after_s"] = health.stall_after_s
        view["last_input_at"] = health.last_input_at.isoformat() if health.last_input_at else None
    if health.note:
        view["note"] = health.note
    return view


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    services = services_of(request)
    # On a storage outage the gauge keeps its last value; /readyz reports the outage.
    with contextlib.suppress(StorageUnavailable):
        services.metrics.incidents_open.set(await count_open(services.db))
        now = services.clock()
        waiting = await services.db.read(waiting_by_platform)
        services.metrics.observe_outbox(
            {p: (n, (now - oldest).total_seconds() if oldest else 0.0) for p, (n, oldest) in waiting.items()}
        )
    services.metrics.observe_inputs(await services.chat.input_health())
    routing = services.hub.routing
    services.metrics.observe_totals(
        claims_taken=services.chat.outbox.claims_taken,
        claims_lost=services.chat.outbox.claims_lost,
        handed_out=routing.relayed_out if routing is not None else 0,
        handed_in=routing.relayed_in if routing is not None else 0,
    )
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
