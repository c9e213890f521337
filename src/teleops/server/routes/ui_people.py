"""People (admins only): everyone's role and where it is declared, 2FA, last web sign-in, linked chat accounts; adding
a person; pending invite codes (issue #24).

Non-admins get 403 from the server (`require_ui_admin` / `admin_form_user`), whatever the navigation bar shows.
Adding a person needs the acting admin's step-up code (server/admin_stepup.py) and is audited as `user.created`.
One person's page and its changes are in ui_person.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.server.admin_stepup import (
    StepUpRefused,
    check_admin_code,
    declared_in_config,
    known_roles,
    stepup_ready,
)
from teleops.server.auth import services_of
from teleops.server.csrf import admin_form_user
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_admin
from teleops.store.database import StorageUnavailable
from teleops.store.identities import LINK_CODE_TTL, IdentityStore
from teleops.store.people import people
from teleops.store.users import UserExists

__all__ = ["INVITE_HOURS", "NAME", "people_page", "router", "unavailable"]

router = APIRouter()

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the config's user name rule (config/settings.py UserSettings)
INVITE_HOURS = int(LINK_CODE_TTL.total_seconds() // 3600)


def unavailable(exc: StorageUnavailable) -> HTTPException:
    return HTTPException(status_code=503, detail="the database is unavailable; nothing changed. Retry in a minute")


async def people_page(
    request: Request, user: UiUser, *, status_code: int = 200, **context: Any
) -> HTMLResponse:  # fmt: skip
    """The People page, with `error`, `notice` or a new invite `code` in `context` when an action asks for it."""
    services = services_of(request)
    try:
        everyone = await people(services.db)
        invites = await IdentityStore(services.db).pending_invites(now=services.clock())
        ready = await stepup_ready(services, user.name)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    return render_page(
        request,
        "people.html",
        user=user,
        people=everyone,
        declared={p.name for p in everyone if declared_in_config(services.settings, p.name)},
        invites=invites,
        roles=known_roles(),
        stepup_ready=ready,
        now=services.clock(),
        status_code=status_code,
        **context,
    )


@router.get("/people", response_class=HTMLResponse, include_in_schema=False)
async def people_list(request: Request, user: Annotated[UiUser, Depends(require_ui_admin)]) -> HTMLResponse:
    return await people_page(request, user)


@router.post("/people", include_in_schema=False)
async def add_person(
    request: Request,
    user: Annotated[UiUser, Depends(admin_form_user)],
    name: Annotated[str, Form(max_length=64)] = "",
    role: Annotated[str, Form(max_length=64)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """A person whose role lives in the database (not in the config); they link chat with an invite code."""
    services = services_of(request)
    name = name.strip()
    error = None
    if not NAME.fullmatch(name):
        error = "A name is 1 to 64 letters, digits, '_', '.' or '-' (it is how they sign in). Nothing changed."
    elif role not in known_roles():
        error = f"There is no role {role!r}; pick one of {', '.join(known_roles())}. Nothing changed."
    elif declared_in_config(services.settings, name):
        error = f"{name} is declared in the config; the next start creates them there. Nothing changed."
    if error:
        return await people_page(request, user, error=error, status_code=400)
    try:
        await check_admin_code(services, user.name, code)
        await services.users.add(name, role, now=services.clock(), by=user.name, via="web")
    except StepUpRefused as refused:
        return await people_page(request, user, error=refused.message, status_code=refused.status)
    except UserExists as exc:
        return await people_page(request, user, error=f"{exc}. Nothing changed.", status_code=409)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    return RedirectResponse(f"/ui/people/{name}?added=1", status_code=303)


@router.post("/invites/{invite_id}/revoke", include_in_schema=False)
async def revoke_invite(
    request: Request, invite_id: int, user: Annotated[UiUser, Depends(admin_form_user)]
) -> Response:  # fmt: skip
    services = services_of(request)
    try:
        person = await IdentityStore(services.db).revoke_invite(invite_id, now=services.clock(), by=user.name)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if person is None:
        return await people_page(
            request, user, error="That invite code was already used, expired or revoked; nothing changed.",
            status_code=404,
        )  # fmt: skip
    return await people_page(request, user, notice=f"The invite code for {person} no longer works.")
