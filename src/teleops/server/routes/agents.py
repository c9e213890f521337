"""Agents: who is connected (`GET /api/v1/agents`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket
from pydantic import BaseModel, Field

from teleops.server.auth import Caller, require_api_caller, services_of
from teleops.server.services import Services
from teleops.store.agents import AgentRecord, list_agents

__all__ = ["AgentList", "AgentOut", "agent_online", "router", "ws_router"]

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])


class AgentOut(BaseModel):
    name: str
    hostname: str
    online: bool
    labels: dict[str, str]
    version: str
    allowlist_digest: str
    connected_at: datetime | None
    last_seen_at: datetime | None
    bound_hostname: str | None = Field(None, description="The hostname this agent answers for (bound, not claimed).")
    bound_host: str | None = Field(None, description="The `host` label name this agent answers for (bound).")
    claim_conflict: str | None = Field(None, description="Why the agent's claimed host names were not taken.")


class AgentList(BaseModel):
    items: list[AgentOut]


def agent_online(services: Services, agent: AgentRecord, *, now: datetime) -> bool:
    """Connected to this replica, or to another one. With several replicas (PostgreSQL) the hub knows where each
    agent is connected (commands/backend/routing.py), so "online" means exactly "a command would be sent"; else
    the agent's row says online and its heartbeats are fresh."""
    if services.hub.is_connected(agent.name):
        return True
    if services.hub.routing is not None:
        return False
    stale = 3 * services.settings.agents.heartbeat.timedelta
    return agent.online and agent.last_seen_at is not None and now - agent.last_seen_at < stale


@router.get("", response_model=AgentList)
async def list_(request: Request, _caller: Annotated[Caller, Depends(require_api_caller)]) -> AgentList:
    services = services_of(request)
    now = services.clock()
    items = [
        AgentOut(
            name=a.name,
            hostname=a.hostname,
            online=agent_online(services, a, now=now),
            labels=a.labels,
            version=a.version,
            allowlist_digest=a.allowlist_digest,
            connected_at=a.connected_at,
            last_seen_at=a.last_seen_at,
            bound_hostname=a.bound_hostname,
            bound_host=a.bound_host,
            claim_conflict=a.claim_conflict,
        )
        for a in await list_agents(services.db)
    ]
    return AgentList(items=items)


ws_router = APIRouter(tags=["agents"])


@ws_router.websocket("/api/v1/agent/ws")
async def agent_socket(websocket: WebSocket) -> None:
    """Agents dial in here (`Authorization: Bearer <agent token>`); see teleops.wire for the protocol."""
    services: Services = websocket.app.state.services
    await services.hub.serve(websocket)
