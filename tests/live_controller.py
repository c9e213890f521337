"""A real controller inside the test's event loop: the app under uvicorn on its configured loopback port, the
embedded local agent connected, and an API token for one user. Services stay reachable for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from sqlalchemy.engine import Connection

from teleops.config import Settings
from teleops.domain.clock import Clock
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.audit import AuditEvent, iter_events
from teleops.store.tokens import TokenKind
from tests.scenarios.conftest import eventually

__all__ = ["LiveController", "live_controller"]


@dataclass
class LiveController:
    services: Services
    client: httpx.AsyncClient  # bound to the controller's URL
    api: dict[str, str]  # headers carrying the user's API token
    api_token: str

    async def events(self) -> list[AuditEvent]:
        def read(conn: Connection) -> list[AuditEvent]:
            return list(iter_events(conn))

        return await self.services.db.run_in_transaction(read)

    async def actions(self) -> list[str]:
        return [event.action for event in await self.events()]


@asynccontextmanager
async def live_controller(
    settings: Settings, clock: Clock, *, user: str = "alice", agent: str = "web-1", timeout_s: float = 10
) -> AsyncIterator[LiveController]:
    """Serve `create_app(settings, clock)` until the block ends; yields once `agent` (the embedded local agent)
    is connected. `timeout_s` is the HTTP client's timeout."""
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), what="the controller to listen")
        assert not task.done(), "the controller stopped during startup"
        services: Services = app.state.services
        token = await services.tokens.create(TokenKind.API, f"{user}-cli", now=clock(), user_name=user)
        async with httpx.AsyncClient(base_url=f"http://{settings.server.listen}", timeout=timeout_s) as client:
            hub = services.hub
            await eventually(lambda: hub.is_connected(agent), timeout=30, what=f"the local agent {agent} to connect")
            yield LiveController(services, client, {"Authorization": f"Bearer {token}"}, token)
    finally:
        server.should_exit = True
        await task
