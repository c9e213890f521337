"""Run again from the incident page, as in chat (chat/conversation.py `_run_again`): the button opens a preview
of exactly what runs where; only "Run it" on that preview runs it, once, through the whole pipeline as the person
who pressed (policy, step-up, approval: ui_command_run.py).

Every step re-derives the choice from the database (memory/run_again.py `check_run_again`: still a command that
preceded the fix of an earlier occurrence of this incident, on this incident's host; the incident not resolved)
and applies the read rule: whoever may not read that command is not shown it, nor may run it from here. A preview
confirms once (its nonce is recorded like a chat update), so a double click runs nothing twice.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from teleops.memory.run_again import RunAgain, RunAgainRefused
from teleops.memory.service import ScenarioMemory
from teleops.server.auth import services_of
from teleops.server.csrf import form_user
from teleops.server.routes.commands import read_access_of
from teleops.server.routes.ui_command_run import Retry, run_from_web
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.server.schemas import RowId
from teleops.store.database import StorageUnavailable
from teleops.store.identities import IdentityStore

__all__ = ["router"]

router = APIRouter()

_PATH = "/incidents/{incident_id}/run-again/{command_id}"


def _nonce() -> str:
    return secrets.token_urlsafe(18)


async def _choice(request: Request, user: UiUser, incident_id: int, command_id: int) -> RunAgain | Response:
    """The Run-again choice, re-checked, or the page that says why there is none."""
    memory: ScenarioMemory | None = getattr(request.app.state, "memory", None)
    if memory is None:
        raise HTTPException(503, "Run again is not available: scenario memory is not running; restart the controller")
    services = services_of(request)
    try:
        access = await read_access_of(services, user.name)
        readable = (await access.decide_ids([command_id]))[command_id].allowed
        choice = await memory.check_run_again(incident_id, command_id) if readable else None
    except RunAgainRefused as exc:
        return _refused(request, user, incident_id, f"Not run: {exc}.", 409)
    except StorageUnavailable as exc:
        raise HTTPException(503, "Not run: the database is unavailable; retry in a minute") from exc
    if choice is None:  # as for a command that is not offered: a number confirms nothing
        return _refused(
            request, user, incident_id,
            f"Not run: command {command_id} is not one to run again on #{incident_id} that you may read. "
            "Go back to the incident and use its own Run-again buttons.", 404,
        )  # fmt: skip
    return choice


def _refused(request: Request, user: UiUser, incident_id: int, error: str, status_code: int) -> HTMLResponse:
    return render_page(
        request, "run_again.html", user=user, status_code=status_code, incident_id=incident_id, choice=None,
        error=error, nonce=None,
    )  # fmt: skip


@router.get(_PATH, response_class=HTMLResponse, include_in_schema=False)
async def preview(
    incident_id: RowId, command_id: RowId, request: Request, user: Annotated[UiUser, Depends(require_ui_user)]
) -> Response:
    """What would run, where, and as whom; nothing runs until "Run it"."""
    choice = await _choice(request, user, incident_id, command_id)
    if isinstance(choice, Response):
        return choice
    return render_page(
        request, "run_again.html", user=user, incident_id=incident_id, choice=choice, error=None, nonce=_nonce()
    )


@router.post(_PATH, include_in_schema=False)
async def confirm(
    incident_id: RowId,
    command_id: RowId,
    request: Request,
    user: Annotated[UiUser, Depends(form_user)],
    nonce: Annotated[str, Form(min_length=16, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")],
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Run the previewed command (re-checked now) once per preview."""
    choice = await _choice(request, user, incident_id, command_id)
    if isinstance(choice, Response):
        return choice
    services = services_of(request)
    try:
        first = await IdentityStore(services.db).first_delivery(
            "web", f"run-again:{user.name}:{nonce}", now=services.clock()
        )
    except StorageUnavailable as exc:
        raise HTTPException(503, "Not run: the database is unavailable; retry in a minute") from exc
    if not first:
        return _refused(
            request, user, incident_id,
            "Not run again: this preview was already confirmed. Press Run again on the incident for a new one.", 409,
        )  # fmt: skip
    path = f"/ui/incidents/{incident_id}/run-again/{command_id}"
    return await run_from_web(
        request,
        user,
        host=choice.host,
        text=choice.text,
        incident_id=incident_id,
        code=code.strip() or None,
        retry=Retry(path, {"nonce": _nonce()}),  # a code re-sends it: a new confirmation of the same preview
    )
