"""What every web UI page shares: the template environment and "who is logged in"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

import teleops
from teleops.server.auth import services_of
from teleops.server.session import CSRF_FIELD, Session, WebSessions, web_sessions
from teleops.server.web_signin import enrolment_required
from teleops.store.database import StorageUnavailable

__all__ = [
    "UiUser",
    "age",
    "check_form_csrf",
    "render_page",
    "require_ui_admin",
    "require_ui_user",
    "safe_next",
    "templates",
]

# The pages someone who must enrol first can still open (the enrolment itself; logout is a POST it also allows).
ENROLMENT_PATHS = ("/ui/account", "/ui/logout")

_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Autoescape everything: alert text is untrusted and lands in every page.
templates = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class UiUser:
    name: str
    csrf_token: str
    session: Session
    sessions: WebSessions
    role: str = ""  # for the navigation bar; every admin route checks the role itself (require_ui_admin)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def safe_next(target: str | None) -> str:
    """A same-site path to go to after login; anything else (other hosts, `//evil`, schemes) becomes /ui/."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


async def require_ui_user(request: Request) -> UiUser:
    """FastAPI dependency for pages: the logged-in user, else a 303 redirect to the login page (also when the
    session was logged out, revoked by a password or role change, idle too long or too old); 503 when the
    session cannot be checked."""
    services = services_of(request)
    try:
        sessions = await web_sessions(request)
        session = await sessions.session_of(request, services)
    except StorageUnavailable as exc:
        raise HTTPException(
            status_code=503, detail="the database is unavailable, so your session cannot be checked; retry in a minute"
        ) from exc
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(status_code=303, headers={"Location": f"/ui/login?next={quote(safe_next(target))}"})
    try:
        record = await services.users.get(session.user)
        # Someone who must enrol TOTP first (twofactor.web_signin) sees only the enrolment page until they have.
        if not request.url.path.startswith(ENROLMENT_PATHS) and await enrolment_required(services, session.user):
            raise HTTPException(status_code=303, headers={"Location": "/ui/account/2fa"})
    except StorageUnavailable as exc:
        raise HTTPException(
            status_code=503, detail="the database is unavailable, so your account cannot be checked; retry in a minute"
        ) from exc
    role = record.role if record is not None else ""
    return UiUser(session.user, sessions.signer.csrf_token(session), session, sessions, role)


async def require_ui_admin(request: Request) -> UiUser:
    """FastAPI dependency for admin pages: the logged-in admin; anyone else gets 403 from the server."""
    user = await require_ui_user(request)
    if not user.is_admin:
        raise HTTPException(status_code=403, detail=f"{user.name} is not an admin; ask an admin if you need this page")
    return user


def check_form_csrf(user: UiUser, token: str | None) -> None:
    """Raises 403 when a form POST lacks this session's CSRF token."""
    if not user.sessions.signer.check_csrf(user.session, token):
        raise HTTPException(
            status_code=403, detail="this form is stale or came from another site; reload the page and try again"
        )


def render_page(
    request: Request, name: str, *, user: UiUser | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render `name` with the common context (user, CSRF field, version)."""
    html = templates.get_template(name).render(
        request_path=request.url.path,
        user=user,
        csrf_field=CSRF_FIELD,
        version=teleops.__version__,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    # The UI's own pages never belong in another site's frame, and never load anything from elsewhere.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def age(now: datetime, then: datetime | None) -> str:
    """ "3m", "2h", "5d": how long ago, for lists."""
    if then is None:
        return ""
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


templates.globals["age"] = age
