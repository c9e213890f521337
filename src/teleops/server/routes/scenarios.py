"""Scenario memory over REST: an incident's history ("last time"), search, and the postmortem export.

Each answers for the caller: commands they may not read keep their place but lose their command line and output
(commands/read_access.py), and search looks into command text only for callers who may read every command."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from teleops.domain.incident import IncidentNotFound
from teleops.memory.export import export_incident
from teleops.memory.service import ScenarioMemory
from teleops.server.auth import Caller, require_api_caller, services_of
from teleops.server.routes.commands import read_access_of
from teleops.server.schemas import RowId

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["scenarios"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such incident"}}


class ScenarioHit(BaseModel):
    incident_id: int
    score: float = Field(description="Relevance; higher is better, comparable within one search only.")
    name: str
    host: str | None
    status: str
    summary: str
    created_at: str
    snippet: str = Field(description="Where the words were found (plain text).")


class ScenarioSearch(BaseModel):
    items: list[ScenarioHit]
    next_offset: int | None = Field(None, description="Pass as `offset` for the next page; null on the last one.")


def memory_of(request: Request) -> ScenarioMemory:
    memory: ScenarioMemory | None = getattr(request.app.state, "memory", None)
    if memory is None:
        raise HTTPException(503, "scenario memory is not running yet; retry in a moment")
    return memory


@router.get("/incidents/{incident_id}/history", responses=_NOT_FOUND)
async def history(
    incident_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> dict[str, Any]:
    """What was done the earlier times this alert fired: the "last time" block as data (docs/scenario-memory.md).
    A command the caller may not read has an empty `argv` and `output_excerpt` and says why in `withheld`."""
    access = await read_access_of(services_of(request), caller.user)
    view = await memory_of(request).history(incident_id, access=access)
    if view is None:
        raise HTTPException(404, f"incident {incident_id} does not exist; list them with GET /api/v1/incidents")
    return view


@router.get("/scenarios", response_model=ScenarioSearch)
async def search(
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
    q: Annotated[str, Query(min_length=1, max_length=500, description="Words to find (all must match).")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> ScenarioSearch:
    """Full text over alert names, hosts, summaries, notes, commands and their output; best match first. Command
    lines and output are searched only for a caller who may read every command (an admin, or a role with a rule
    for hosts `*`); for others the search covers incidents and notes."""
    access = await read_access_of(services_of(request), caller.user)
    hits = await memory_of(request).search(q, limit=limit + 1, offset=offset, access=access)
    items = [
        ScenarioHit(
            incident_id=h.incident_id,
            score=h.score,
            name=h.name,
            host=h.host,
            status=h.status,
            summary=h.summary,
            created_at=h.created_at.isoformat(),
            snippet=h.snippet,
        )
        for h in hits[:limit]
    ]
    return ScenarioSearch(items=items, next_offset=offset + limit if len(hits) > limit else None)


class MarkdownResponse(PlainTextResponse):
    media_type = "text/markdown"


@router.get("/incidents/{incident_id}/export.md", response_class=MarkdownResponse, responses=_NOT_FOUND)
async def export_md(
    incident_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> MarkdownResponse:
    """The incident as a postmortem-ready Markdown timeline (times, actors, commands, outputs, notes); commands
    the caller may not read are listed without their command line and output."""
    services = services_of(request)
    try:
        access = await read_access_of(services, caller.user)
        text = await export_incident(services.db, incident_id, access=access)
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return MarkdownResponse(text)
