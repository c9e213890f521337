"""The app factory: `create_app(settings)` builds the controller; the lifespan starts and stops its parts."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

import teleops
from teleops.chat.console.gateway import CONSOLE_CHAT_ID, ConsoleGateway
from teleops.chat.console.read_rule import ConsoleReaders
from teleops.chat.service import ChatAccess, ChatCommands, ChatService
from teleops.commands.approval import ApprovalDesk
from teleops.commands.backend.agent_hub import AgentHub
from teleops.commands.duo import DuoConfig, DuoPushes
from teleops.config import Settings
from teleops.domain.clock import Clock, system_clock
from teleops.domain.stepup import StepUpRules
from teleops.memory.first_response import FirstResponder
from teleops.memory.service import ScenarioMemory
from teleops.oncall.service import OnCallService
from teleops.server.access_upkeep import AccessUpkeep
from teleops.server.bootstrap import first_start, sync_configured_users, welcome_text
from teleops.server.chat_wiring import build_chat
from teleops.server.front_door import FrontDoor
from teleops.server.heartbeats import HeartbeatMonitor
from teleops.server.local_agent import LocalAgentSupervisor, ensure_local_agent_token
from teleops.server.local_agent_user import LocalAgentRefused, local_run_as
from teleops.server.metrics import Metrics
from teleops.server.retention import RetentionSchedule
from teleops.server.routes import agents as agent_routes
from teleops.server.routes import alerts, command_batches, health, incidents, ui
from teleops.server.routes import chat as chat_routes
from teleops.server.routes import commands as command_routes
from teleops.server.routes import heartbeats as heartbeat_routes
from teleops.server.routes import ical as ical_routes
from teleops.server.routes import scenarios as scenario_routes
from teleops.server.selfwatch import SelfWatch
from teleops.server.services import Services
from teleops.server.singletons import Singletons
from teleops.store.approvals import ApprovalRules
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.console_messages import ConsoleMessageStore
from teleops.store.database import Database
from teleops.store.heartbeats import HeartbeatStore
from teleops.store.incident_events import IncidentEvents
from teleops.store.ingest import IncidentChange, IngestWriter
from teleops.store.leases import LeaseStore
from teleops.store.sealed_argv import ArgvVault
from teleops.store.tokens import TokenStore
from teleops.store.twofactor import TwoFactorStore
from teleops.store.users import UserStore

__all__ = ["create_app"]

log = structlog.get_logger(__name__)

_UI_STATIC = Path(__file__).resolve().parent / "static"
_SWAGGER_UI_STATIC = Path(__file__).resolve().parent / "swagger_ui"  # vendored Swagger UI 5 (reads OpenAPI 3.1)


def create_app(
    settings: Settings, *, clock: Clock = system_clock, announce: Callable[[str], None] | None = None
) -> FastAPI:
    """Build the controller app. `announce` receives the first-start text (credentials, curl example)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_settings(settings.database)
        # Secrets in command lines are masked where they are kept and shown; originals sealed outside the DB.
        db.argv_vault = ArgvVault.open(settings.data_dir, settings.redaction_rules())
        await db.migrate()
        # Every part is built once, each after what it needs; nothing is set on a part after it is built but the
        # on-call answers in chat (on-call pages through chat's outbox, and chat answers /oncall).
        # Loops that run in one replica at a time, under fenced leases; started once everything is built.
        singletons = Singletons(LeaseStore(db, ttl=settings.database.singleton_lease_ttl.timedelta), metrics=metrics)
        app.state.singletons = singletons
        users, tokens = UserStore(db), TokenStore(db)
        # Who hears of incident changes, and when: chat, on-call and first response subscribe in this order.
        events = IncidentEvents()
        ingest = IngestWriter(db, clock=clock, events=events)
        hub = AgentHub(
            db=db,
            tokens=tokens,
            clock=clock,
            settings=settings.agents,
            hosts=settings.hosts,
            redaction=settings.redaction_rules(),  # output is redacted here too, whatever the agent did (T24)
            on_rejected=lambda reason: metrics.agent_messages_rejected.labels(reason).inc(),
            local_agent=settings.local_agent.name if settings.local_agent.enabled else None,
        )
        access = _access_control(settings, db, users, hub, clock)
        # Scenario memory: "last time" and Run-again in every incident message, /history in chat.
        memory = ScenarioMemory.from_settings(settings.memory, db, clock=clock)
        app.state.memory = memory
        # Heartbeats in: a job that stops pinging opens an incident through ingest (server/heartbeats.py).
        heartbeats = HeartbeatMonitor(
            HeartbeatStore(db), ingest=ingest, metrics=metrics, clock=clock, configured=settings.heartbeats
        )
        app.state.heartbeats = heartbeats
        commands = ChatCommands(
            hub,
            timeout_s=settings.agents.default_timeout.seconds,
            output_cap_bytes=settings.agents.output_cap_bytes,
            cancel=hub.send_cancel,
            ends=hub.progress,
        )
        chat = build_chat(
            settings, db=db, events=events, users=users, clock=clock, metrics=metrics,
            commands=commands, access=access, memory=memory, heartbeats=heartbeats, singletons=singletons,
        )  # fmt: skip
        oncall = OnCallService(
            settings,
            db=db,
            events=events,
            clock=clock,
            wake_outbox=chat.wake,
            on_page_outcome=metrics.count_page,
            on_step=lambda team: metrics.escalation_steps.labels(team).inc(),
            token_problems=chat.health.problems,
        )
        _watch_deliveries(chat, oncall, metrics)
        chat.conversation.use_oncall(oncall)
        responders = _first_responders(settings, memory, hub, clock)

        def first_responses(changes: Sequence[IncidentChange]) -> None:
            for responder in responders:
                responder.after_ingest(changes)

        events.on_alerts(durable=first_responses)
        services = Services(
            settings=settings,
            clock=clock,
            db=db,
            tokens=tokens,
            users=users,
            ingest=ingest,
            incident_events=events,
            hub=hub,
            chat=chat,
            oncall=oncall,
            stepup=access.stepup,
            checkpoints=access.checkpoints,
            approvals=access.approvals,
            metrics=metrics,
            duo=access.duo,
        )
        app.state.services = services
        app.state.console_gateway = ConsoleGateway(
            ConsoleMessageStore(db), clock=clock, readers=ConsoleReaders(db, users)
        )
        # The console is always on: the embedded default's chat, and a second place alerts show up.
        chat.add_gateway(app.state.console_gateway, allowed_chats=[CONSOLE_CHAT_ID], alert_chats=[CONSOLE_CHAT_ID])
        await sync_configured_users(services)
        first = await first_start(services)
        if first is not None and announce is not None:
            announce(welcome_text(settings.server.base_url(), first, settings.local_agent.name))
        # Started in dependency order, stopped in reverse.
        ingest.start()
        hub.start()
        local_agent = await _start_local_agent(services)
        upkeep = AccessUpkeep(db, access.checkpoints, access.approvals)
        upkeep.start()
        await chat.start()
        oncall.start()
        retention = RetentionSchedule(db, settings, clock=clock, singletons=singletons)
        retention.start()
        await heartbeats.start()
        # Self-test of the whole path and the external dead-man's-switch pings (docs/self-monitoring.md).
        self_watch = SelfWatch(
            settings.self_check, db=db, ingest=ingest, chat=chat, metrics=metrics, clock=clock, singletons=singletons
        )
        self_watch.start()
        app.state.self_watch = self_watch
        await singletons.start()
        _freeze_startup_objects()
        log.info("controller.started", listen=settings.server.listen, database=_safe_db(settings.database.url))
        try:
            yield
        finally:
            await singletons.stop()  # released: another replica takes them over at its next try
            await heartbeats.stop()
            await self_watch.stop()
            await retention.stop()
            for responder in responders:
                await responder.stop()
            await oncall.stop()
            await chat.stop()
            await upkeep.stop()
            if local_agent is not None:
                await local_agent.stop()
            await hub.stop()
            await ingest.stop()
            await db.close()
            log.info("controller.stopped")

    metrics = Metrics()
    app = FastAPI(
        title="TeleOps",
        version=teleops.__version__,
        description="Alerts in, incidents, commands on the alerting host, and a memory of what fixed it.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static/swagger-ui", StaticFiles(directory=_SWAGGER_UI_STATIC), name="swagger-ui")
    app.mount("/ui/static", StaticFiles(directory=_UI_STATIC), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        # The web UI; its own pages send whoever is not logged in on to /ui/login.
        return RedirectResponse("/ui/", status_code=303)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="TeleOps API",
            swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # never ask validator.swagger.io about our schema
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first["loc"])
        return JSONResponse(
            {"detail": f"{field}: {first['msg']}", "field": field, "errors": _jsonable(errors)},
            status_code=422,
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            # Document the 422 body that validation_error (and HTTPException(422, "...")) really sends.
            schema.get("components", {}).get("schemas", {})["HTTPValidationError"] = _VALIDATION_ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.include_router(alerts.router)
    app.include_router(incidents.router)
    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(agent_routes.router)
    app.include_router(agent_routes.ws_router)
    app.include_router(command_routes.router)
    app.include_router(command_batches.router)
    app.include_router(chat_routes.router)
    app.include_router(scenario_routes.router)
    app.include_router(heartbeat_routes.router)
    app.include_router(ical_routes.router)  # iCal feeds of rotations and people (token in the URL)
    app.add_middleware(_LatencyMiddleware, metrics=metrics)
    app.add_middleware(alerts.IngestFastPath)  # outside the router (see its docstring)
    app.add_middleware(FrontDoor)  # added last: outermost; credentials and body caps before any body is read
    return app


class _LatencyMiddleware:
    """Request latency by route template (never by raw path: paths may carry ids or secrets)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe_latency(template, scope["method"], time.perf_counter() - started)


def _watch_deliveries(chat: ChatService, oncall: OnCallService, metrics: Metrics) -> None:
    """A page's outbox row answered: the escalation worker settles it now. A platform rejecting our token: the gauge,
    and every admin told through another channel (the chat service tells the other platforms' alert chats)."""
    chat.on_page_outcome(oncall.worker.wake)
    notices: set[asyncio.Task[None]] = set()

    def token_problem(platform: str, problem: str | None) -> None:
        metrics.platform_token_rejected.labels(platform).set(1 if problem else 0)
        task = asyncio.get_running_loop().create_task(oncall.worker.tell_admins(platform, problem))
        notices.add(task)
        task.add_done_callback(notices.discard)

    chat.health.subscribe(token_problem)


def _access_control(settings: Settings, db: Database, users: UserStore, hub: AgentHub, clock: Clock) -> ChatAccess:
    """TOTP step-up, Duo pushes (when configured), two-person approval and the audit checkpoints, for the REST API,
    the web UI and chat alike."""
    elevation = settings.twofactor.elevation.timedelta
    stepup = TwoFactorStore(db, settings.data_dir, StepUpRules(lockout_after=settings.twofactor.lockout_after,
                                                                elevation=elevation))  # fmt: skip
    checkpoints = CheckpointLog(settings.data_dir, witness=settings.audit.witness)
    approvals = ApprovalDesk(
        db=db,
        users=users,
        sender=hub,
        clock=clock,
        rules=ApprovalRules(ttl=settings.approval.ttl.timedelta, needed=settings.approval.approvers),
        output_cap_bytes=settings.agents.output_cap_bytes,
        stepup=stepup,
        checkpoints=checkpoints,
    )
    return ChatAccess(stepup, approvals, checkpoints, duo=_duo_pushes(settings, db, clock, elevation))


def _duo_pushes(settings: Settings, db: Database, clock: Clock, elevation: timedelta) -> DuoPushes | None:
    """Duo push step-up when `twofactor.duo` is configured (raises DuoClientMissing without the `duo` extra)."""
    duo = settings.twofactor.duo
    if duo is None:
        return None
    config = DuoConfig(
        ikey=duo.ikey,
        skey=duo.skey.get_secret_value(),
        api_host=duo.api_host,
        timeout_s=duo.timeout.seconds,
        push_timeout_s=duo.push_timeout.seconds,
        ca_certs=duo.ca_certs,
        elevation=elevation,
    )
    return DuoPushes(config, db=db, clock=clock, uses_duo=lambda user: settings.twofactor_method(user) == "duo")


def _first_responders(settings: Settings, memory: ScenarioMemory, hub: AgentHub, clock: Clock) -> list[FirstResponder]:
    """The first response to a new incident (`memory.first_response_role`): none when that is not configured."""
    role = settings.memory.first_response_role
    if role is None:
        return []
    responder = FirstResponder(
        memory,
        role=role,
        sender=lambda: hub,
        clock=clock,
        timeout_s=settings.agents.default_timeout.seconds,
        output_cap_bytes=settings.agents.output_cap_bytes,
    )
    return [responder]


async def _start_local_agent(services: Services) -> LocalAgentSupervisor | None:
    """The embedded agent for this machine (local_agent.enabled), supervised as a child process."""
    if not services.settings.local_agent.enabled:
        return None
    try:
        run_as = local_run_as(services.settings)
    except LocalAgentRefused as exc:
        log.error("local_agent.refused", reason=str(exc))
        return None
    token_file = await ensure_local_agent_token(services.settings, services.tokens, clock=services.clock)
    if token_file is None:
        return None
    supervisor = LocalAgentSupervisor(services.settings, token_file, hub=services.hub, run_as=run_as)
    supervisor.start()
    return supervisor


def _safe_db(url: str) -> str:
    """The database URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


_VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ValidationFailure",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What is wrong and with which field."},
        "field": {"type": "string", "description": "The path of the first bad field, e.g. `body.duration`."},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _jsonable(errors: Any) -> Any:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in errors]


def _freeze_startup_objects() -> None:
    """Move what start-up allocated (modules, compiled statements, settings: ~10^6 objects) out of the collector's
    reach: a full collection otherwise walks all of it, ~70 ms with the event loop stopped, and one landing on an
    alert's way to chat is its p99 (B3 in docs/benchmarks.md). What is allocated later is collected as usual."""
    gc.collect()
    gc.freeze()
