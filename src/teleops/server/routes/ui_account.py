"""The account page: enrol an authenticator app for TOTP (issue #24), in the browser.

The page offers a fresh secret as a QR code (drawn here as inline SVG with segno: no request leaves the server,
no script) and as text for typing in by hand. Nothing is stored until the person confirms a code from the app:
the offer travels sealed in the form (store/twofactor.py `offer_enrolment`) and expires after `OFFER_TTL`.
The secret, its failure count and its lock are the same ones chat `/otp` and `teleops user 2fa-enroll` use.

Replacing an enrolled authenticator needs a current code from it first (judged, counted and locked like any
other code); someone who lost theirs asks an admin to run `teleops user 2fa-enroll USER` (a new secret) or
`teleops user 2fa-unlock USER` (after a lock).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import segno
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from teleops.server.auth import services_of
from teleops.server.csrf import form_user
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.server.services import Services
from teleops.server.web_signin import enrolment_required
from teleops.store.database import StorageUnavailable
from teleops.store.twofactor import NotEnrolled, TwoFactorKeyMissing, TwoFactorStore

__all__ = ["router"]

router = APIRouter()

OFFER_TTL = timedelta(minutes=10)
_MAX_FIELD = 512


def _store(services: Services) -> TwoFactorStore:
    return services.stepup


def _qr_svg(uri: str) -> Markup:
    """The otpauth URI as an inline SVG QR code (dark on white, with the quiet zone scanners need)."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff", title="Authenticator QR code")
    return Markup(svg)  # noqa: S704 - segno's own markup; the URI inside is encoded into modules, not text


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


async def _page(
    request: Request, user: UiUser, *, error: str | None = None, notice: str | None = None, offer: bool = False,
    status_code: int = 200,
) -> HTMLResponse:  # fmt: skip
    services = services_of(request)
    store = _store(services)
    now = services.clock()
    try:
        state = await store.state(user.name)
        required = await enrolment_required(services, user.name)
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc
    pending = None
    if state is None or offer:
        try:
            pending = store.offer_enrolment(user.name, now=now)
        except TwoFactorKeyMissing as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
    return render_page(
        request,
        "account_2fa.html",
        user=user,
        state=state,
        required=required,
        pending=pending,
        qr=_qr_svg(pending.uri) if pending else None,
        secret_text=_grouped(pending.secret) if pending else None,
        offer_minutes=int(OFFER_TTL.total_seconds() // 60),
        error=error,
        notice=notice,
        status_code=status_code,
    )


@router.get("/account/2fa", response_class=HTMLResponse, include_in_schema=False)
async def account_2fa(request: Request, user: Annotated[UiUser, Depends(require_ui_user)]) -> HTMLResponse:
    return await _page(request, user)


@router.post("/account/2fa", include_in_schema=False)
async def confirm_enrolment(
    request: Request,
    user: Annotated[UiUser, Depends(form_user)],
    offer: Annotated[str, Form(max_length=_MAX_FIELD)] = "",
    code: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Make the offered secret this person's once a code from it checks out."""
    services = services_of(request)
    store = _store(services)
    try:
        confirmed = await store.confirm_enrolment(
            user.name, offer, code, now=services.clock(), by=user.name, via="web", ttl=OFFER_TTL
        )
    except TwoFactorKeyMissing as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="Not enrolled: the database is unavailable; retry") from exc
    if not confirmed:
        return await _page(
            request,
            user,
            error="That code does not match the new secret (or this page is older than "
            f"{int(OFFER_TTL.total_seconds() // 60)} minutes). Scan the QR code below, which is new, "
            "and enter the 6 digits your app shows for TeleOps now.",
            offer=True,
            status_code=400,
        )
    return RedirectResponse("/ui/account/2fa?enrolled=1", status_code=303)


@router.post("/account/2fa/replace", include_in_schema=False)
async def replace_authenticator(
    request: Request,
    user: Annotated[UiUser, Depends(form_user)],
    code: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Offer a new secret after a current code from the enrolled one (lost it? an admin re-enrols you)."""
    services = services_of(request)
    store = _store(services)
    try:
        judgement = await store.verify(user.name, code, now=services.clock(), via="web")
    except NotEnrolled:
        return await _page(request, user)
    except TwoFactorKeyMissing as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    except StorageUnavailable as exc:
        raise HTTPException(status_code=503, detail="the database is unavailable; retry in a minute") from exc
    if not judgement.accepted:
        message = judgement.message.replace("USER", user.name)
        return await _page(request, user, error=message[:1].upper() + message[1:] + ".", status_code=401)
    return await _page(
        request, user, offer=True, notice="Code accepted. Scan the new code below; the old one works until you confirm."
    )
