"""The Fleet page: every agent with its online state, when it was last heard from, its version and labels, the
host names it answers for (bound, never merely claimed: store/agents.py), and each host's latest commands that
the reader may read (commands/readable_commands.py; the others are not mentioned at all).

Agents themselves are visible to every signed-in person, as `GET /api/v1/agents` is to every API token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from teleops.commands.readable_commands import readable_recent
from teleops.server.auth import services_of
from teleops.server.routes.agents import agent_online
from teleops.server.routes.commands import read_access_of
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.store.agents import AgentRecord, list_agents
from teleops.store.command_history import CommandSummary
from teleops.store.database import StorageUnavailable

__all__ = ["FleetAgent", "answers_for", "router"]

router = APIRouter()

RECENT_PER_HOST = 5


@dataclass(frozen=True, slots=True)
class FleetAgent:
    agent: AgentRecord
    online: bool
    hosts: tuple[str, ...]
    recent: list[CommandSummary]


def answers_for(agent: AgentRecord) -> tuple[str, ...]:
    """The names a command's host may be given to reach this agent (commands/hosts.py): its own name, its bound
    hostname, its bound `host` label; each once."""
    names = (agent.name, agent.bound_hostname, agent.bound_host)
    return tuple(dict.fromkeys(n for n in names if n))


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
async def fleet_page(request: Request, user: Annotated[UiUser, Depends(require_ui_user)]) -> HTMLResponse:
    services = services_of(request)
    now: datetime = services.clock()
    try:
        agents = await list_agents(services.db)
        access = await read_access_of(services, user.name)
        recent = await readable_recent(services.db, access, [a.name for a in agents], per_host=RECENT_PER_HOST)
    except StorageUnavailable as exc:
        raise HTTPException(503, "the database is unavailable; retry in a minute") from exc
    fleet = [FleetAgent(a, agent_online(services, a, now=now), answers_for(a), recent.get(a.name, [])) for a in agents]
    fleet.sort(key=lambda f: (not f.online, f.agent.name))  # online first: those are the ones to act on
    return render_page(
        request,
        "fleet.html",
        user=user,
        fleet=fleet,
        online=sum(1 for f in fleet if f.online),
        now=now,
    )
