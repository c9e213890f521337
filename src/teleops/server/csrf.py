"""CSRF on every web form: the per-session token in a hidden field, checked on every POST.

SameSite=Strict cookies already keep other sites' requests from carrying the session, but not every browser
honours them and a same-site page (another app on the same registrable domain) is not "cross-site". So every
form also carries `csrf_token`, an HMAC of the session id (server/session.py), and every POST handler is behind
`form_user`, which refuses a form without it before the handler runs. The login form, which has no session yet,
carries a token bound to a nonce cookie instead (routes/ui_login.py).
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from teleops.server.routes.ui_common import UiUser, check_form_csrf, require_ui_admin, require_ui_user
from teleops.server.session import CSRF_FIELD, CSRF_HEADER

__all__ = ["admin_form_user", "form_user"]


async def _token(request: Request) -> str | None:
    try:
        form = await request.form()
    except (ValueError, AssertionError) as exc:  # not a form body at all
        raise HTTPException(status_code=400, detail="expected a form; reload the page and try again") from exc
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else request.headers.get(CSRF_HEADER)


async def form_user(request: Request, user: UiUser = Depends(require_ui_user)) -> UiUser:  # noqa: B008
    """The logged-in user of a form POST that carries this session's CSRF token; 403 without it."""
    check_form_csrf(user, await _token(request))
    return user


async def admin_form_user(request: Request, user: UiUser = Depends(require_ui_admin)) -> UiUser:  # noqa: B008
    """`form_user` for admin-only forms: 403 for non-admins, then the same CSRF check."""
    check_form_csrf(user, await _token(request))
    return user
