"""The Commands pages: the history (filters by host, person and status; newest first, a page at a time), one
command (its output, live while it runs; Cancel), and the Run form's target.

Everything is under the read rule (commands/read_access.py), as the REST API and the console apply it: the
history lists only commands the reader may read, and a command they may not read answers 404, as one that does
not exist, so a number confirms nothing. Cancel follows `POST /api/v1/commands/{id}/cancel`: who asked for it,
or an admin (commands/person.py).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from teleops.commands.person import CancelRefused, cancel_command, may_cancel
from teleops.commands.readable_commands import readable_page
from teleops.domain.command import TERMINAL, CommandNotFound, CommandRecord, CommandStatus
from teleops.server.auth import services_of
from teleops.server.csrf import form_user
from teleops.server.routes.commands import read_access_of
from teleops.server.routes.ui_command_run import Retry, run_from_web
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.server.routes.ui_notice import SIGNATURE_FIELD, signed_message, verified_message
from teleops.server.schemas import RowId
from teleops.server.services import Services
from teleops.store.approvals import get_approval
from teleops.store.command_history import CommandQuery
from teleops.store.commands import get_command
from teleops.store.database import StorageUnavailable

__all__ = ["router"]

router = APIRouter()

PAGE_SIZE = 50
STATUSES = [s.value for s in CommandStatus]
_UNAVAILABLE = "the database is unavailable; retry in a minute"


def _not_readable(command_id: int) -> str:
    return (
        f"Command {command_id} does not exist, or is not yours to read: a command is shown to who asked for it, "
        "who voted on its approval, admins and roles whose policy covers its host. Check the number in the "
        "Commands list, or ask an admin."
    )


async def _readable(services: Services, user: UiUser, command_id: int) -> CommandRecord | None:
    """The command if `user` may read it; None when it does not exist or they may not (the same answer)."""
    try:
        record = await get_command(services.db, command_id)
        access = await read_access_of(services, user.name)
        allowed = (await access.decide([record]))[record.id].allowed
    except CommandNotFound:
        return None
    except StorageUnavailable as exc:
        raise HTTPException(503, _UNAVAILABLE) from exc
    return record if allowed else None


@router.get("/commands", response_class=HTMLResponse, include_in_schema=False)
async def commands_page(
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    host: Annotated[str, Query(max_length=255)] = "",
    person: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    services = services_of(request)
    query = CommandQuery(host=host.strip(), requester=person.strip(), status=status.strip(), before=before,
                         limit=PAGE_SIZE)  # fmt: skip
    context: dict[str, Any] = {"query": query, "statuses": STATUSES, "now": services.clock()}
    if query.status and query.status not in STATUSES:
        return render_page(
            request, "commands.html", user=user, status_code=400, page=None, older=None, newest="/ui/commands",
            error=f"Unknown status {query.status!r}: choose one of {', '.join(STATUSES)}, or any.", **context,
        )  # fmt: skip
    try:
        page = await readable_page(services.db, await read_access_of(services, user.name), query)
    except StorageUnavailable as exc:
        raise HTTPException(503, _UNAVAILABLE) from exc
    filters = {k: v for k, v in (("host", query.host), ("person", query.requester), ("status", query.status)) if v}
    older = f"/ui/commands?{urlencode({**filters, 'before': page.older})}" if page.older else None
    newest = "/ui/commands" + (f"?{urlencode(filters)}" if filters else "")
    return render_page(
        request, "commands.html", user=user, page=page, older=older, newest=newest, error=None, **context
    )


@router.get("/commands/{command_id}", response_class=HTMLResponse, include_in_schema=False)
async def command_page(
    command_id: RowId,
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    error: Annotated[str | None, Query(max_length=400)] = None,
    sig: Annotated[str | None, Query(alias=SIGNATURE_FIELD, max_length=64)] = None,
) -> HTMLResponse:
    services = services_of(request)
    error = verified_message(user, "error", error, sig)  # only what this server said to this session
    record = await _readable(services, user, command_id)
    if record is None:
        return render_page(request, "not_found.html", user=user, status_code=404, message=_not_readable(command_id))
    try:
        approval = await get_approval(services.db, command_id)
    except StorageUnavailable as exc:
        raise HTTPException(503, _UNAVAILABLE) from exc
    return render_page(
        request,
        "command.html",
        user=user,
        command=record,
        ended=CommandStatus(record.status) in TERMINAL,
        approval=approval,
        can_cancel=may_cancel(record, user.name, user.role or None),
        error=error,
        now=services.clock(),
    )


@router.get("/commands/{command_id}/live", include_in_schema=False)
async def command_live(
    command_id: RowId, request: Request, user: Annotated[UiUser, Depends(require_ui_user)]
) -> JSONResponse:
    """The output so far and the status, for the command page's own script while the command runs."""
    record = await _readable(services_of(request), user, command_id)
    if record is None:
        return JSONResponse({"detail": _not_readable(command_id)}, status_code=404)
    body = {
        "status": record.status,
        "ended": CommandStatus(record.status) in TERMINAL,
        "output": record.output,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/commands/{command_id}/cancel", include_in_schema=False)
async def cancel(command_id: RowId, request: Request, user: Annotated[UiUser, Depends(form_user)]) -> Response:
    services = services_of(request)
    record = await _readable(services, user, command_id)
    if record is None:
        return render_page(request, "not_found.html", user=user, status_code=404, message=_not_readable(command_id))
    location = f"/ui/commands/{command_id}"
    try:
        await cancel_command(services, record, user=user.name, role=user.role or None)
    except CancelRefused as exc:
        location += "?" + signed_message(user, "error", f"Not cancelled: {exc.detail}.")
    except StorageUnavailable as exc:
        raise HTTPException(503, f"Not cancelled: {_UNAVAILABLE}") from exc
    return RedirectResponse(location, status_code=303)


@router.post("/commands", include_in_schema=False)
async def run(
    request: Request,
    user: Annotated[UiUser, Depends(form_user)],
    host: Annotated[str, Form(min_length=1, max_length=255)],
    command: Annotated[str, Form(max_length=4096)] = "",
    incident_id: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """Run `command` on `host` (for `incident_id`'s timeline) through the pipeline; see ui_command_run.py."""
    fields = {"host": host, "command": command}
    if incident_id is not None:
        fields["incident_id"] = str(incident_id)
    return await run_from_web(
        request,
        user,
        host=host,
        text=command,
        incident_id=incident_id,
        code=code.strip() or None,
        retry=Retry("/ui/commands", fields),
    )
