"""Log in and out of the web UI (the admin login is printed at first start).

Every login attempt is in the audit log: `login.succeeded` in the same transaction as the session row, before the
cookie is issued (no audit record, no session), `login.failed` best effort with the user name tried and why, never
the password. Logout revokes the session row (server/session.py), so the old cookie opens nothing on any replica,
audited as `logout` in the same transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.server.auth import services_of
from teleops.server.routes.ui_common import UiUser, check_form_csrf, render_page, require_ui_user, safe_next
from teleops.server.services import Services
from teleops.server.session import LOGIN_COOKIE, WebSessions, web_sessions
from teleops.store.audit import AuditUnavailable, record
from teleops.store.database import StorageUnavailable

__all__ = ["router"]

router = APIRouter()
log = structlog.get_logger(__name__)

_MAX_FIELD = 256
_MAX_AUDITED_NAME = 64


async def _audit_failed_login(services: Services, *, now: datetime, name: str, address: str, failure: str) -> bool:
    """Append the failed attempt to the audit log; False when it could not be written. Never the password."""
    tried = name[:_MAX_AUDITED_NAME] or "(empty)"
    try:
        await record(
            services.db,
            at=now,
            actor=tried,
            action="login.failed",
            subject=f"user:{tried}",
            data={"address": address, "via": "web", "reason": failure},
        )
    except (AuditUnavailable, StorageUnavailable):
        return False
    return True


def _login_form(
    request: Request, sessions: WebSessions, *, next_path: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    response = render_page(
        request,
        "login.html",
        user=None,
        csrf_token=sessions.signer.login_csrf_token(nonce),
        next_path=next_path,
        error=error,
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", secure=sessions.secure(request), path="/ui"
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next_path: Annotated[str | None, Query(alias="next")] = None) -> HTMLResponse:
    return _login_form(request, await web_sessions(request), next_path=safe_next(next_path))


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    password: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    csrf_token: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "/ui/",
) -> Response:
    services = services_of(request)
    sessions = await web_sessions(request)
    target = safe_next(next_path)
    if not sessions.signer.check_login_csrf(request.cookies.get(LOGIN_COOKIE), csrf_token):
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="The login form expired or came from another site. Enter your name and password again.",
            status_code=403,
        )
    now = services.clock()
    address = request.client.host if request.client else "unknown"
    name = username.strip()
    wait = sessions.throttle.retry_after(name, address, now=now)
    if wait is not None:
        await _audit_failed_login(services, now=now, name=name, address=address, failure="throttled")
        return _login_form(
            request,
            sessions,
            next_path=target,
            error=f"Too many failed logins for {name!r} from your address. Wait {wait} seconds, then try again; "
            "an admin can reset the password with `teleops user set-password USER`.",
            status_code=429,
        )
    user = await services.users.verify_password(name, password) if name and password else None
    if user is None:
        sessions.throttle.failed(name, address, now=now)
        await _audit_failed_login(services, now=now, name=name, address=address, failure="wrong user name or password")
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="Wrong user name or password. The admin password was printed when TeleOps first started; "
            "reset it with `teleops user set-password admin`.",
            status_code=401,
        )
    try:
        cookie = await sessions.start(user.name, now=now, audit_data={"address": address, "via": "web"})
    except (AuditUnavailable, StorageUnavailable):
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="Not logged in: the audit log could not record the login. Try again in a minute; if it persists, "
            "check that the database is reachable and writable.",
            status_code=503,
        )
    sessions.throttle.succeeded(name, address)
    response = RedirectResponse(target, status_code=303)
    sessions.set_session_cookie(response, request, cookie)
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(
    request: Request,
    user: Annotated[UiUser, Depends(require_ui_user)],
    csrf_token: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
) -> Response:
    check_form_csrf(user, csrf_token)
    services = services_of(request)
    now = services.clock()
    data = {"address": request.client.host if request.client else "unknown", "via": "web"}
    try:
        try:
            await user.sessions.end(user.session, now=now, audit_data=data)
        except AuditUnavailable:
            # Ending the session matters more than its record: revoke it anyway, and say so in the log.
            log.warning("logout.not_audited", user=user.name)
            await user.sessions.end(user.session, now=now, audit_data=None)
    except StorageUnavailable as exc:
        raise HTTPException(
            status_code=503,
            detail="Not logged out: the database is unavailable, so the session could not be ended. "
            "Try again in a minute, or close the browser.",
        ) from exc
    response = RedirectResponse("/ui/login", status_code=303)
    user.sessions.clear_session_cookie(response, request)
    return response
