"""Incidents: list, read with timeline, and the human actions (ack, resolve, snooze).

Every authenticated caller reads every incident (the rotation shares them); in a timeline, the command line and
output of a command the caller may not read are withheld (commands/read_access.py): the event stays, with
`withheld` saying why."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request

from teleops.config.settings import parse_duration
from teleops.domain.incident import IncidentAction, IncidentNotFound, IncidentStatus, InvalidTransition
from teleops.server.auth import Caller, require_api_caller, services_of
from teleops.server.routes.commands import read_access_of
from teleops.server.schemas import MAX_ROW_ID, IncidentDetail, IncidentList, IncidentOut, RowId, SnoozeRequest
from teleops.store.incidents import act_on_incident, get_incident, list_incidents

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

MAX_SNOOZE = timedelta(days=30)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such incident"}}


@router.get("", response_model=IncidentList)
async def list_(
    request: Request,
    _caller: Annotated[Caller, Depends(require_api_caller)],
    status: Annotated[IncidentStatus | None, Query(description="open, acknowledged, snoozed or resolved")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only incidents with a smaller id (paging).")
    ] = None,
) -> IncidentList:
    records = await list_incidents(services_of(request).db, status=status, limit=limit, before_id=before)
    next_before = records[-1].id if len(records) == limit else None
    return IncidentList(items=[IncidentOut.of(r) for r in records], next_before=next_before)


@router.get("/{incident_id}", response_model=IncidentDetail, responses=_NOT_FOUND)
async def read(
    incident_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> IncidentDetail:
    services = services_of(request)
    try:
        record = await get_incident(services.db, incident_id)
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return IncidentDetail.of(await (await read_access_of(services, caller.user)).incident(record))


async def _act(
    request: Request, incident_id: int, action: IncidentAction, caller: Caller, snooze_for: str | None = None
) -> IncidentDetail:
    services = services_of(request)
    now = services.clock()
    until = None
    if snooze_for is not None:
        try:
            seconds = parse_duration(snooze_for)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        if not 0 < seconds <= MAX_SNOOZE.total_seconds():
            raise HTTPException(422, "snooze for between 1s and 30d")
        until = now + timedelta(seconds=seconds)
    try:
        record, _changed = await act_on_incident(
            services.db,
            incident_id,
            action,
            actor=caller.user,
            now=now,
            snooze_until=until,
            via=caller.via,
            events=services.incident_events,
        )
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except InvalidTransition as exc:
        raise HTTPException(409, f"{exc}; reload the incident to see its state") from exc
    return IncidentDetail.of(await (await read_access_of(services, caller.user)).incident(record))


_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"description": "Not possible in the incident's state"},
}


@router.post("/{incident_id}/ack", response_model=IncidentDetail, responses=_ACTION_RESPONSES)
async def ack(
    incident_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> IncidentDetail:
    return await _act(request, incident_id, IncidentAction.ACK, caller)


@router.post("/{incident_id}/resolve", response_model=IncidentDetail, responses=_ACTION_RESPONSES)
async def resolve(
    incident_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> IncidentDetail:
    return await _act(request, incident_id, IncidentAction.RESOLVE, caller)


@router.post("/{incident_id}/snooze", response_model=IncidentDetail, responses=_ACTION_RESPONSES)
async def snooze(
    incident_id: RowId,
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
    body: Annotated[SnoozeRequest | None, Body()] = None,
) -> IncidentDetail:
    return await _act(request, incident_id, IncidentAction.SNOOZE, caller, (body or SnoozeRequest()).duration)
