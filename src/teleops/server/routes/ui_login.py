"""Log in and out of the web UI (the admin login is printed at first start).

Every login attempt is in the audit log: `login.succeeded` in the same transaction as the session row, before the
cookie is issued (no audit record, no session), `login.failed` best effort with the user name tried and why, never
the password. Logout revokes the session row (server/session.py), so the old cookie opens nothing on any replica,
audited as `logout` in the same transaction.

With TOTP (server/web_signin.py, docs/web-ui.md): after a right password, someone enrolled gets a second form for
a code, carried by a signed sign-in ticket; the session starts only after the code. Failures there are audited
as `web.login_failed`, and the attempt that locks a user (by passwords or by codes) as `web.locked_out`."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from teleops.domain.stepup import Verdict
from teleops.server.auth import services_of
from teleops.server.routes.ui_common import UiUser, check_form_csrf, render_page, require_ui_user, safe_next
from teleops.server.services import Services
from teleops.server.session import LOGIN_COOKIE, WebSessions, web_sessions
from teleops.server.web_signin import WebSignIn, enrolment_required, web_signin
from teleops.store.audit import AuditUnavailable, record
from teleops.store.database import StorageUnavailable
from teleops.store.twofactor import NotEnrolled, TwoFactorKeyMissing

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


async def _audit_web(services: Services, action: str, *, now: datetime, name: str, data: dict[str, str]) -> None:
    """`web.login_failed` / `web.locked_out`, best effort (the refusal stands either way)."""
    tried = name[:_MAX_AUDITED_NAME] or "(empty)"
    try:
        await record(services.db, at=now, actor=tried, action=action, subject=f"user:{tried}", data=data)
    except (AuditUnavailable, StorageUnavailable):
        log.warning("web_signin.not_audited", action=action, user=tried)


def _locked_message(name: str, until: datetime, now: datetime) -> str:
    minutes = max(1, int((until - now).total_seconds() + 59) // 60)
    return (
        f"Sign-in for {name!r} is locked after too many failed attempts. Try again after "
        f"{until:%H:%M} UTC (in {minutes} min). Forgot the password? An admin sets a new one with "
        f"`teleops user set-password {name}`; the lock still runs its time."
    )


def _login_form(
    request: Request,
    sessions: WebSessions,
    *,
    next_path: str,
    error: str | None = None,
    status_code: int = 200,
    signin: WebSignIn | None = None,
    ticket_user: str | None = None,
) -> HTMLResponse:
    """The login form, or with `ticket_user` (and `signin`) the code form of that user's sign-in."""
    nonce = secrets.token_urlsafe(16)
    ticket = None
    if signin is not None and ticket_user is not None:
        ticket = signin.tickets.issue(ticket_user, nonce, now=services_of(request).clock())
    response = render_page(
        request,
        "login.html" if ticket is None else "login_code.html",
        user=None,
        csrf_token=sessions.signer.login_csrf_token(nonce),
        next_path=next_path,
        error=error,
        ticket=ticket,
        signing_in=ticket_user,
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", secure=sessions.secure(request), path="/ui"
    )
    return response


def _storage_refusal(request: Request, sessions: WebSessions, target: str) -> HTMLResponse:
    """The answer when the sign-in's failure counts cannot be read or written: no check, no sign-in."""
    return _login_form(
        request,
        sessions,
        next_path=target,
        error="Not logged in: the database is unavailable, so this attempt could not be checked. Try again in a "
        "minute; if it persists, check that the database is reachable.",
        status_code=503,
    )


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
    signin = await web_signin(request)
    try:
        locked_until = await signin.guard.locked_until(name, now=now) if name else None
        wait = None if locked_until is not None else await signin.guard.retry_after(name, address, now=now)
    except StorageUnavailable:
        return _storage_refusal(request, sessions, target)
    if locked_until is not None:
        await _audit_failed_login(services, now=now, name=name, address=address, failure="locked out")
        return _login_form(
            request, sessions, next_path=target, error=_locked_message(name, locked_until, now), status_code=429
        )
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
        try:
            locks_until = await signin.guard.password_failed(name, address, now=now)
        except StorageUnavailable:
            return _storage_refusal(request, sessions, target)
        await _audit_failed_login(services, now=now, name=name, address=address, failure="wrong user name or password")
        if locks_until is not None:
            data = {"address": address, "reason": "failed passwords", "until": locks_until.isoformat()}
            await _audit_web(services, "web.locked_out", now=now, name=name, data=data)
            return _login_form(
                request, sessions, next_path=target, error=_locked_message(name, locks_until, now), status_code=429
            )
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="Wrong user name or password. The admin password was printed when TeleOps first started; "
            "reset it with `teleops user set-password admin`.",
            status_code=401,
        )
    try:
        await signin.guard.password_right(user.name)
    except StorageUnavailable:
        return _storage_refusal(request, sessions, target)
    if await services.stepup.state(user.name) is not None:
        # Enrolled: the password is half of it. The session starts only after the code (login_code).
        return _login_form(request, sessions, next_path=target, signin=signin, ticket_user=user.name)
    if await enrolment_required(services, user.name):
        target = "/ui/account/2fa"  # their role needs a code: enrol first, nothing else opens until then
    return await _start_session(request, sessions, user.name, now=now, target=target, data={"address": address})


@router.post("/login/code", include_in_schema=False)
async def login_code(
    request: Request,
    ticket: Annotated[str, Form(max_length=1024)] = "",
    code: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    csrf_token: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "/ui/",
) -> Response:
    """The second step: the code from the person's authenticator app, judged by the shared TOTP state."""
    services = services_of(request)
    sessions = await web_sessions(request)
    signin = await web_signin(request)
    target = safe_next(next_path)
    now = services.clock()
    nonce = request.cookies.get(LOGIN_COOKIE)
    name = signin.tickets.check(ticket, nonce, now=now) if sessions.signer.check_login_csrf(nonce, csrf_token) else None
    if name is None:
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="The sign-in form expired (a code must follow the password within 5 minutes) or came from "
            "another site. Enter your name and password again.",
            status_code=403,
        )
    address = request.client.host if request.client else "unknown"
    try:
        locked_until = await signin.guard.locked_until(name, now=now)
    except StorageUnavailable:
        return _storage_refusal(request, sessions, target)
    if locked_until is not None:
        return _login_form(
            request, sessions, next_path=target, error=_locked_message(name, locked_until, now), status_code=429
        )
    try:
        judgement = await services.stepup.verify(name, code, now=now, via="web")
    except NotEnrolled:
        return _login_form(
            request, sessions, next_path=target, error="Your authenticator was removed; log in again.", status_code=403
        )
    except TwoFactorKeyMissing as exc:
        raise HTTPException(status_code=503, detail=f"Not logged in: {exc}") from exc
    except StorageUnavailable as exc:
        raise HTTPException(
            status_code=503, detail="Not logged in: the database is unavailable; try again in a minute"
        ) from exc
    if not judgement.accepted:
        data = {"address": address, "reason": judgement.verdict.value}
        await _audit_web(services, "web.login_failed", now=now, name=name, data=data)
        if judgement.verdict is Verdict.NOW_LOCKED:
            await _audit_web(services, "web.locked_out", now=now, name=name, data={**data, "reason": "failed codes"})
        locked = judgement.verdict in (Verdict.NOW_LOCKED, Verdict.LOCKED)
        message = judgement.message.replace("USER", name)
        return _login_form(
            request,
            sessions,
            next_path=target,
            error=message[:1].upper() + message[1:] + ".",
            status_code=423 if locked else 401,
            signin=None if locked else signin,
            ticket_user=None if locked else name,
        )
    return await _start_session(
        request, sessions, name, now=now, target=target, data={"address": address, "2fa": "totp"}
    )


async def _start_session(
    request: Request, sessions: WebSessions, name: str, *, now: datetime, target: str, data: dict[str, str]
) -> Response:
    """The session cookie and the redirect, once every step passed; `login.succeeded` is audited first."""
    try:
        cookie = await sessions.start(name, now=now, audit_data={**data, "via": "web"})
    except (AuditUnavailable, StorageUnavailable):
        return _login_form(
            request,
            sessions,
            next_path=target,
            error="Not logged in: the audit log could not record the login. Try again in a minute; if it persists, "
            "check that the database is reachable and writable.",
            status_code=503,
        )
    try:
        signin = await web_signin(request)
        await signin.guard.signed_in(name, data.get("address", "unknown"))
    except StorageUnavailable:
        log.warning("web_signin.failures_not_cleared", user=name)  # they age out of the window by themselves
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
