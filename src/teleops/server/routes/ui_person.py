"""One person (admins only): change their role, reset their 2FA, hand out an invite code, unlink a chat account.

Each change is checked in this order, so a bad request never spends the admin's code: CSRF and admin (the
`admin_form_user` dependency), then the input (known person, known role, not declared in the config), then the
acting admin's step-up code (server/admin_stepup.py), then the change itself, audited in its own transaction together
with the message that tells the person in their chats (`PersonNotice`).

A person declared under `users:` in the config keeps the role written there: the page shows it read-only and the
server answers 409 to a role change, whatever the form held (docs/access-control.md, "Who sets a role").
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from teleops.domain.message import Message
from teleops.server.admin_stepup import (
    PersonNotice,
    StepUpRefused,
    check_admin_code,
    declared_in_config,
    known_roles,
    stepup_ready,
)
from teleops.server.auth import services_of
from teleops.server.csrf import admin_form_user
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_admin
from teleops.server.routes.ui_people import INVITE_HOURS, NAME, unavailable
from teleops.store.database import StorageUnavailable
from teleops.store.identities import IdentityStore
from teleops.store.people import person
from teleops.store.users import LastAdmin

__all__ = ["router"]

router = APIRouter()


async def person_page(
    request: Request, user: UiUser, name: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:  # fmt: skip
    services = services_of(request)
    try:
        found = await person(services.db, name) if NAME.fullmatch(name) else None
        ready = await stepup_ready(services, user.name)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if found is None:
        return render_page(
            request, "not_found.html", user=user, status_code=404,
            message=f"There is no person called {name!r}. Go back to People to see everyone.",
        )  # fmt: skip
    return render_page(
        request,
        "person.html",
        user=user,
        person=found,
        declared=declared_in_config(services.settings, name),
        roles=known_roles(),
        stepup_ready=ready,
        now=services.clock(),
        status_code=status_code,
        **context,
    )


@router.get("/people/{name}", response_class=HTMLResponse, include_in_schema=False)
async def person_view(
    request: Request,
    name: str,
    user: Annotated[UiUser, Depends(require_ui_admin)],
    added: Annotated[int, Query()] = 0,
) -> HTMLResponse:
    notice = "Added. Hand them an invite code below so they can link their chat." if added else None
    return await person_page(request, user, name, notice=notice)


@router.post("/people/{name}/role", include_in_schema=False)
async def change_role(
    request: Request,
    name: str,
    user: Annotated[UiUser, Depends(admin_form_user)],
    role: Annotated[str, Form(max_length=64)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    services = services_of(request)
    try:
        if await services.users.get(name) is None:
            return await person_page(request, user, name)  # 404 page
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if declared_in_config(services.settings, name):
        return await person_page(
            request, user, name, status_code=409,
            error=f"{name}'s role is declared in the config, which wins at every start: edit users: in teleops.yaml "
            "and restart to change it. Nothing changed.",
        )  # fmt: skip
    if role not in known_roles():
        return await person_page(
            request, user, name, status_code=400,
            error=f"There is no role {role!r}; pick one of {', '.join(known_roles())}. Nothing changed.",
        )  # fmt: skip
    now = services.clock()
    message = Message(
        title="Your TeleOps role changed",
        body=f"{user.name} changed your role to {role}. If you use the web UI, sign in again.",
    )
    tell = PersonNotice(services, name, message, now)
    try:
        await check_admin_code(services, user.name, code)
        change = await services.users.set_role(name, role, now=now, by=user.name, via="web", also=tell)
    except StepUpRefused as refused:
        return await person_page(request, user, name, error=refused.message, status_code=refused.status)
    except LastAdmin as exc:
        return await person_page(request, user, name, error=f"{exc}. Nothing changed.", status_code=409)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if change is None:  # removed meanwhile
        return await person_page(request, user, name)
    if not change.changed:
        return await person_page(request, user, name, notice=f"{name} already has the role {role}; nothing changed.")
    return await person_page(
        request,
        user,
        name,
        notice=f"{name} is now {role} (was {change.before}); their web sessions ended. {tell.sent()}",
    )


@router.post("/people/{name}/2fa-reset", include_in_schema=False)
async def reset_twofactor(
    request: Request,
    name: str,
    user: Annotated[UiUser, Depends(admin_form_user)],
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    services = services_of(request)
    store = services.stepup
    try:
        if await services.users.get(name) is None:
            return await person_page(request, user, name)  # 404 page
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if store is None:
        return await person_page(
            request, user, name, status_code=503, error="2FA is not set up in this process yet; retry in a minute.",
        )  # fmt: skip
    now = services.clock()
    base = services.settings.server.base_url()
    message = Message(
        title="Your TeleOps authenticator was reset",
        body=f"{user.name} reset your two-factor sign-in. Enrol a new authenticator app at {base}/ui/account/2fa "
        "after you sign in. If you did not ask for this, tell your admins now.",
    )
    tell = PersonNotice(services, name, message, now)
    try:
        if await store.state(name) is None:
            return await person_page(
                request, user, name, status_code=409, error=f"{name} has no authenticator enrolled; nothing to reset.",
            )  # fmt: skip
        await check_admin_code(services, user.name, code)
        reset = await store.reset(name, now=now, by=user.name, via="web", also=tell)
    except StepUpRefused as refused:
        return await person_page(request, user, name, error=refused.message, status_code=refused.status)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if not reset:
        return await person_page(
            request, user, name, notice=f"{name} has no authenticator enrolled any more; nothing to reset."
        )
    return await person_page(
        request,
        user,
        name,
        notice=f"{name}'s authenticator is reset; they enrol a new one at their next sign-in. {tell.sent()}",
    )


@router.post("/people/{name}/invite", include_in_schema=False)
async def invite(
    request: Request,
    name: str,
    user: Annotated[UiUser, Depends(admin_form_user)],
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    """A one-time link code for `name`, shown once on the page that answers this POST."""
    services = services_of(request)
    try:
        if await services.users.get(name) is None:
            return await person_page(request, user, name)  # 404 page
        await check_admin_code(services, user.name, code)
        link_code = await IdentityStore(services.db).invite(name, now=services.clock(), by=user.name)
    except StepUpRefused as refused:
        return await person_page(request, user, name, error=refused.message, status_code=refused.status)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    return await person_page(request, user, name, invite_code=link_code, invite_hours=INVITE_HOURS)


@router.post("/people/{name}/unlink", include_in_schema=False)
async def unlink(
    request: Request,
    name: str,
    user: Annotated[UiUser, Depends(admin_form_user)],
    platform: Annotated[str, Form(max_length=32)] = "",
    external_id: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    """Remove one chat account of `name` (told there first, in the same transaction). Needs no code: it only
    takes access away."""
    services = services_of(request)
    now = services.clock()
    message = Message(
        title="This chat account is no longer linked to TeleOps",
        body=f"{user.name} unlinked it from {name}. Ask an admin for an invite code to link it again.",
    )
    tell = PersonNotice(services, name, message, now)
    try:
        removed = await IdentityStore(services.db).unlink(
            name, platform, external_id, now=now, by=user.name, before=tell
        )
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if not removed:
        return await person_page(
            request, user, name, status_code=404,
            error=f"{name} has no {platform} account {external_id!r} linked; nothing changed. Reload the page.",
        )  # fmt: skip
    return await person_page(
        request, user, name, notice=f"{platform} account {external_id} is no longer linked to {name}. {tell.sent()}"
    )
