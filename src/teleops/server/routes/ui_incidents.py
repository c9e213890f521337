"""One incident's scenario: header, timeline, Ack / Resolve / Snooze (the list is routes/ui_incident_list.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.domain.incident import TIMELINE_TITLES, IncidentAction, IncidentNotFound, InvalidTransition
from teleops.server.auth import services_of
from teleops.server.routes.commands import read_access_of
from teleops.server.routes.ui_command_run import run_offer
from teleops.server.routes.ui_common import UiUser, check_form_csrf, render_page, require_ui_user
from teleops.server.routes.ui_notice import SIGNATURE_FIELD, signed_message, verified_message
from teleops.server.schemas import RowId
from teleops.store.incidents import act_on_incident, get_incident

__all__ = ["router"]

router = APIRouter()

SNOOZE_CHOICES = {"30m": timedelta(minutes=30), "1h": timedelta(hours=1), "4h": timedelta(hours=4)}
_SAFE_SCHEMES = ("http://", "https://")


@router.get("/incidents/{incident_id}", response_class=HTMLResponse, include_in_schema=False)
async def incident_page(
    incident_id: RowId,
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    error: Annotated[str | None, Query(max_length=300)] = None,
    sig: Annotated[str | None, Query(alias=SIGNATURE_FIELD, max_length=64)] = None,
) -> HTMLResponse:
    services = services_of(request)
    error = verified_message(user, "error", error, sig)  # only what this server said to this session
    try:
        record = await get_incident(services.db, incident_id)
    except IncidentNotFound:
        return render_page(
            request,
            "not_found.html",
            user=user,
            status_code=404,
            message=f"Incident {incident_id} does not exist. Go back to the incident list.",
        )
    # Commands this person may not read are shown without their command line and output (read_access.py).
    access = await read_access_of(services, user.name)
    record = await access.incident(record)
    memory = getattr(request.app.state, "memory", None)  # scenario memory: what was done the earlier times
    last_time = await memory.history(incident_id, access=access) if memory is not None else None
    # "Run a command on HOST", only for people whose policy lets them run something there (ui_command_run.py).
    offer = await run_offer(services, user, record.host)
    return render_page(
        request,
        "incident.html",
        user=user,
        incident=record,
        last_time=last_time if last_time and last_time["last"] else None,
        events=[_event_view(e.kind, e.actor, e.at, e.data) for e in record.timeline],
        link=_safe_link(record.url),
        snooze_choices=list(SNOOZE_CHOICES),
        error=error,
        now=services.clock(),
        run_offer=offer,
    )


@router.post("/incidents/{incident_id}/{action}", include_in_schema=False)
async def act(
    incident_id: RowId,
    action: str,
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    duration: Annotated[str, Form(max_length=8)] = "1h",
) -> Response:
    check_form_csrf(user, csrf_token)
    actions = {"ack": IncidentAction.ACK, "resolve": IncidentAction.RESOLVE, "snooze": IncidentAction.SNOOZE}
    if action not in actions:
        raise HTTPException(404, f"unknown action {action!r}; use ack, resolve or snooze")
    services = services_of(request)
    now = services.clock()
    until = None
    if actions[action] is IncidentAction.SNOOZE:
        if duration not in SNOOZE_CHOICES:
            raise HTTPException(422, f"snooze for one of {', '.join(SNOOZE_CHOICES)}")
        until = now + SNOOZE_CHOICES[duration]
    location = f"/ui/incidents/{incident_id}"
    try:
        await act_on_incident(
            services.db,
            incident_id,
            actions[action],
            actor=user.name,
            now=now,
            snooze_until=until,
            via="web",
            events=services.incident_events,
        )
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except InvalidTransition as exc:
        location += "?" + signed_message(user, "error", f"Not done: {exc}. The page shows its current state.")
    return RedirectResponse(location, status_code=303)


def _safe_link(url: str | None) -> str | None:
    """The alert's link if it is plain http(s); a `javascript:` or odd URL is never made clickable."""
    if url and url.strip().lower().startswith(_SAFE_SCHEMES) and not any(c.isspace() for c in url.strip()):
        return url.strip()
    return None


_TITLES = TIMELINE_TITLES
# Shown in their own blocks, not in the key/value list.
_SPECIAL = {
    "output",
    "output_excerpt",
    "argv",
    "command",
    "text",
    "exit_code",
    "host",
    "via",
    "status",
    "duration_s",
    "withheld",
}


def _event_view(kind: str, actor: str | None, at: Any, data: dict[str, Any]) -> dict[str, Any]:
    """One timeline event for the template: a title, the command and its result, the other fields as text."""
    argv = data.get("argv")
    command = " ".join(str(a) for a in argv) if isinstance(argv, list) else data.get("command")
    exit_code = data.get("exit_code")
    duration = data.get("duration_s")
    # Command events carry the tail of the output as `output_excerpt` (store/commands.py).
    output = data.get("output", data.get("output_excerpt")) or None
    return {
        "kind": kind,
        "family": kind.split(".", 1)[0],
        "title": _TITLES.get(kind, kind),
        "actor": actor,
        "at": at,
        "via": data.get("via"),
        "command": None if command is None else str(command),
        "host": data.get("host"),
        "status": data.get("status"),
        "exit_code": exit_code,
        "duration": f"{duration:.2f} s" if isinstance(duration, int | float) else None,
        "ok": exit_code == 0 if exit_code is not None else None,
        "output": None if output is None else str(output),
        "text": None if data.get("text") is None else str(data["text"]),
        "withheld": None if data.get("withheld") is None else str(data["withheld"]),
        "details": [(str(k), _short(v)) for k, v in sorted(data.items()) if k not in _SPECIAL and v not in (None, "")],
    }


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 300 else text[:299] + "…"
