"""Tokens (admins only): ingest, agent and API tokens — list, create (secret shown once), revoke (issue #24).

The same store as `teleops token create|revoke` (store/tokens.py): secrets are random, stored as SHA-256 only, and
every creation and revocation is audited with its actor. Creating one needs the acting admin's step-up code
(server/admin_stepup.py); the secret is on the page that answers the POST and nowhere else (`Cache-Control:
no-store`), with an `alertmanager.yml` snippet for ingest tokens that names this server's real URL. Revoking needs
no code: it only takes access away, and a revoked token stops working at once (verification reads the database).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from teleops.domain.message import Message
from teleops.server.admin_stepup import PersonNotice, StepUpRefused, check_admin_code, stepup_ready
from teleops.server.auth import services_of
from teleops.server.csrf import admin_form_user
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_admin
from teleops.server.routes.ui_people import NAME, unavailable
from teleops.server.services import Services
from teleops.store.database import StorageUnavailable
from teleops.store.tokens import TokenExists, TokenKind

__all__ = ["router"]

router = APIRouter()

_KINDS = {kind.value for kind in TokenKind}
KIND_HELP = {
    TokenKind.INGEST: "for a monitoring sender (Alertmanager, Grafana, …): Authorization: Bearer TOKEN",
    TokenKind.AGENT: "for `teleops agent --name NAME` on one host (the token's name is the agent's name)",
    TokenKind.API: "for scripts and the REST API, acting as one person under their policy",
}


async def tokens_page(request: Request, user: UiUser, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    services = services_of(request)
    try:
        tokens = await services.tokens.list()
        creators = await services.tokens.creators()
        everyone = await services.users.all()
        ready = await stepup_ready(services, user.name)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    live = [t for t in tokens if t.revoked_at is None]
    revoked = sorted((t for t in tokens if t.revoked_at is not None), key=lambda t: t.revoked_at or t.created_at)
    return render_page(
        request,
        "tokens.html",
        user=user,
        live=live,
        revoked=list(reversed(revoked)),
        creators={(t.kind, t.name): creators.get((t.kind, t.name), "") for t in tokens},
        kinds=KIND_HELP,
        people=[p.name for p in everyone],
        stepup_ready=ready,
        now=services.clock(),
        status_code=status_code,
        **context,
    )


@router.get("/tokens", response_class=HTMLResponse, include_in_schema=False)
async def tokens_list(request: Request, user: Annotated[UiUser, Depends(require_ui_admin)]) -> HTMLResponse:
    return await tokens_page(request, user)


@router.post("/tokens", include_in_schema=False)
async def create_token(
    request: Request,
    user: Annotated[UiUser, Depends(admin_form_user)],
    kind: Annotated[str, Form(max_length=16)] = "",
    name: Annotated[str, Form(max_length=64)] = "",
    person: Annotated[str, Form(max_length=64)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    services = services_of(request)
    name, person = name.strip(), person.strip()
    chosen = TokenKind(kind) if kind in _KINDS else None
    error = None
    if chosen is None:
        error = "Pick what the token is for: ingest, agent or api. Nothing changed."
    elif not NAME.fullmatch(name):
        error = "A token name is 1 to 64 letters, digits, '_', '.' or '-' (e.g. alertmanager). Nothing changed."
    elif chosen is TokenKind.API and not person:
        error = "An API token acts as one person: pick who. Nothing changed."
    if error is None and chosen is TokenKind.API:
        try:
            if await services.users.get(person) is None:
                error = f"There is no person called {person!r}; add them on the People page first. Nothing changed."
        except StorageUnavailable as exc:
            raise unavailable(exc) from exc
    if error is not None or chosen is None:
        return await tokens_page(request, user, error=error, status_code=400, form={"kind": kind, "name": name})
    acts_as = person if chosen is TokenKind.API else None
    now = services.clock()
    try:
        await check_admin_code(services, user.name, code)
        secret = await services.tokens.create(chosen, name, now=now, user_name=acts_as, by=user.name)
    except StepUpRefused as refused:
        return await tokens_page(
            request, user, error=refused.message, status_code=refused.status, form={"kind": kind, "name": name}
        )
    except TokenExists as exc:
        return await tokens_page(request, user, error=f"{exc}. Nothing changed.", status_code=409)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    told = None
    if acts_as is not None and acts_as != user.name:
        told = await _tell_api_token(services, acts_as, name, user.name)
    base = services.settings.server.base_url()
    return render_page(
        request,
        "token_created.html",
        user=user,
        kind=chosen.value,
        token_name=name,
        acts_as=acts_as,
        secret=secret,
        ingest_url=f"{base}/api/v1/alerts/alertmanager",
        base_url=base,
        told=told,
    )


async def _tell_api_token(services: Services, person: str, name: str, admin: str) -> str:
    """An API token that acts as someone else: they hear of it (a sentence for the admin says whether)."""
    message = Message(
        title="An API token now acts as you",
        body=f"{admin} created the API token {name!r}, which acts as you under your policy. "
        "If you did not expect it, ask an admin to revoke it at /ui/tokens.",
    )
    tell = PersonNotice(services, person, message, services.clock())
    try:
        await services.db.write(tell)
    except StorageUnavailable:
        return f"{person} could not be told (the database is unavailable); tell them yourself."
    return tell.sent()


@router.post("/tokens/revoke", include_in_schema=False)
async def revoke_token(
    request: Request,
    user: Annotated[UiUser, Depends(admin_form_user)],
    kind: Annotated[str, Form(max_length=16)] = "",
    name: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    services = services_of(request)
    if kind not in _KINDS:
        return await tokens_page(request, user, error="Unknown token kind; reload the page.", status_code=400)
    try:
        revoked = await services.tokens.revoke(TokenKind(kind), name, now=services.clock(), by=user.name)
    except StorageUnavailable as exc:
        raise unavailable(exc) from exc
    if not revoked:
        return await tokens_page(
            request, user, status_code=404,
            error=f"No live {kind} token is named {name!r} (already revoked?); nothing changed.",
        )  # fmt: skip
    return await tokens_page(request, user, notice=f"The {kind} token {name!r} is revoked: it stops working now.")
