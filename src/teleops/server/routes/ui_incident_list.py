"""The incident list: filters in the URL, counts per status, live rows, and bulk Ack / Resolve.

- `GET /ui/` — the page. Filters are a GET form (server/incident_filters.py), applied in SQL
  (store/incident_list.py). Without JavaScript it is complete: filter, select, act, reload.
- `GET /ui/incidents/rows` — the same list's counts and rows alone, for static/incidents.js, which asks every few
  seconds with the last ETag and swaps the rows in when they changed (304 otherwise). Polling the database, not
  an in-process event, so a change made on another replica shows too, and a restarted controller is simply
  asked again. It shows what the page shows: incidents are readable by every signed-in person, and the list
  holds no command text.
- `POST /ui/incidents/bulk` — Acknowledge / Resolve the ticked incidents (server/incident_bulk.py), CSRF-checked.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.oncall.escalation import Step
from teleops.server.auth import services_of
from teleops.server.csrf import admin_form_user, form_user
from teleops.server.incident_bulk import BulkOutcome, act_on_many, describe_problem, selection_problem
from teleops.server.incident_filters import SEVERITIES, SOURCE_NAMES, STATUS_CHOICES, ListFilters
from teleops.server.routes.commands import read_access_of
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user, templates
from teleops.server.sample_alert import sample_alert_body
from teleops.sources.registry import get_source
from teleops.store.audit import record
from teleops.store.database import StorageUnavailable
from teleops.store.incident_list import IncidentList, query_incidents

__all__ = ["router"]

router = APIRouter()

LIST_SIZE = 200  # rows shown; the counts say how many more match
POLL_MS = 2500  # how often an open list asks for changes
_BULK_ERROR_KEY = "bulk_error"
ROWS_TEMPLATE = "incident_rows.html"  # the counts and rows: inside the page, and alone for the live updates


def _policies(request: Request) -> dict[str, tuple[tuple[Step, ...], int]]:
    oncall = services_of(request).oncall
    return dict(oncall.directory.policies) if oncall is not None else {}


def _rotations(request: Request) -> list[str]:
    oncall = services_of(request).oncall
    return sorted(oncall.directory.rotations) if oncall is not None else []


async def _listing(request: Request, user: UiUser, filters: ListFilters) -> tuple[IncidentList, bool]:
    """(the list, whether text search looked into commands); raises 503 when the database does not answer."""
    services = services_of(request)
    try:
        access = await read_access_of(services, user.name)
        commands = access.reads_every_command()
        query = filters.store_query(policies=_policies(request), search_commands=commands, limit=LIST_SIZE)
        return await query_incidents(services.db, query), commands
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _rows_context(request: Request, filters: ListFilters, listing: IncidentList) -> dict[str, Any]:
    return {
        "filters": filters,
        "listing": listing,
        "statuses": STATUS_CHOICES[2:],
        "now": services_of(request).clock(),
    }


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def incidents_page(request: Request, user: Annotated[UiUser, Depends(require_ui_user)]) -> HTMLResponse:
    params = dict(request.query_params)
    filters = ListFilters.from_params(params)
    rotations = _rotations(request)
    problems = filters.problems(rotations)
    outcome = BulkOutcome.from_params(params)
    context: dict[str, Any] = {
        "filters": filters,
        "problems": problems,
        "status_choices": STATUS_CHOICES,
        "severities": SEVERITIES,
        "sources": SOURCE_NAMES,
        "rotations": rotations,
        "notice": outcome.summary() if outcome else None,
        "bulk_error": describe_problem(params.get(_BULK_ERROR_KEY, ""), params.get("selected", "")),
        "listing": None,
        "search_scope": None,
        "rows_url": "/ui/incidents/rows" + (f"?{filters.query_string()}" if filters.active else ""),
        "poll_ms": POLL_MS,
    }
    if problems:
        return render_page(request, "incidents.html", user=user, status_code=400, **context)
    listing, commands = await _listing(request, user, filters)
    rows = _rows_context(request, filters, listing)
    # The ETag the rows endpoint would give these rows now, so the script's first poll is a 304 if nothing changed.
    context.update(rows, rows_etag=_etag(templates.get_template(ROWS_TEMPLATE).render(**rows).encode()))
    if filters.q and not commands:
        context["search_scope"] = "Text is searched in incidents and notes only: you may not read every command."
    return render_page(request, "incidents.html", user=user, **context)


@router.get("/incidents/rows", response_class=HTMLResponse, include_in_schema=False)
async def incident_rows(request: Request, user: Annotated[UiUser, Depends(require_ui_user)]) -> Response:
    """The counts and rows of the list for these filters; 304 when they are what the If-None-Match ETag says."""
    filters = ListFilters.from_params(dict(request.query_params))
    problems = filters.problems(_rotations(request))
    if problems:
        raise HTTPException(status_code=400, detail=" ".join(problems))
    listing, _commands = await _listing(request, user, filters)
    response = render_page(request, ROWS_TEMPLATE, user=user, **_rows_context(request, filters, listing))
    etag = _etag(bytes(response.body))
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-store"})
    response.headers["ETag"] = etag
    return response


@router.post("/incidents/bulk", include_in_schema=False)
async def bulk_action(request: Request, user: Annotated[UiUser, Depends(form_user)]) -> Response:
    """Ack or resolve every ticked incident as this person; back to the same filtered list with what happened."""
    form = await request.form()
    action = str(form.get("action") or "")
    raw_ids = [str(v).strip() for v in form.getlist("incident")]
    back = ListFilters.from_params(dict(parse_qsl(str(form.get("back") or "")[:2000])))
    problem = selection_problem(action, raw_ids)
    if problem is not None:
        report = {_BULK_ERROR_KEY: problem, "selected": str(len(set(raw_ids)))}
    else:
        services = services_of(request)
        ids = [int(v) for v in raw_ids]
        outcome = await act_on_many(
            services.db, ids, action, actor=user.name, now=services.clock(), events=services.incident_events
        )
        report = outcome.to_params()
    filters = back.query_string()
    return RedirectResponse("/ui/?" + (f"{filters}&" if filters else "") + urlencode(report), status_code=303)


@router.post("/incidents/test-alert", include_in_schema=False)
async def fire_test_alert(request: Request, user: Annotated[UiUser, Depends(admin_form_user)]) -> Response:
    """Fire the sample alert (the first-start `curl`'s) about the embedded agent's host, through the normal ingest
    path, so it routes, pages and can be answered like any other; then open its incident. Admins only."""
    services = services_of(request)
    generic = get_source("generic")
    if generic is None:
        raise RuntimeError("the generic source is missing from sources/registry.py")
    alerts = generic.parse(sample_alert_body(services.settings.local_agent.name))
    try:
        outcomes = await services.ingest.submit(alerts)
        await record(
            services.db,
            at=services.clock(),
            actor=user.name,
            action="alert.test_fired",
            subject=alerts[0].fingerprint,
            data={"via": "web", "host": alerts[0].host or ""},
        )
    except StorageUnavailable as exc:
        raise HTTPException(
            status_code=503, detail="the database is unavailable, so the test alert was not stored; retry in a minute"
        ) from exc
    incident_id = outcomes[0].incident_id
    return RedirectResponse(f"/ui/incidents/{incident_id}" if incident_id else "/ui/", status_code=303)
