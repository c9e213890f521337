"""Who is calling: ingest tokens for senders, API tokens for people and scripts."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request

from teleops.server.services import Services
from teleops.server.session import CSRF_HEADER, SESSION_COOKIE, web_sessions
from teleops.store.tokens import TokenKind

__all__ = ["Caller", "credential_from", "require_api_caller", "services_of"]


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    via: str  # "api-token:NAME" — recorded with every action


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def credential_from(request: Request) -> str | None:
    """The secret from `Authorization: Bearer X` or HTTP Basic (password = token; for senders that only do Basic)."""
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return None
    scheme, _, value = values[0].strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def require_api_caller(request: Request) -> Caller:
    """FastAPI dependency: a live API token, else 401 saying how to get one.

    Without an Authorization header, a web UI session cookie is accepted too; then any method that
    changes state must carry the session's CSRF token in `X-CSRF-Token` (403 otherwise).
    """
    secret = credential_from(request)
    services = services_of(request)
    if secret is None and not request.headers.getlist("authorization") and SESSION_COOKIE in request.cookies:
        caller = await _session_caller(request, services)
        if caller is not None:
            return caller
    record = await services.tokens.verify(TokenKind.API, secret) if secret else None
    if record is None or record.user_name is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API token; create one with `teleops token create api NAME --user USER` "
            "and send it as `Authorization: Bearer TOKEN`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Caller(user=record.user_name, via=f"api-token:{record.name}")


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _session_caller(request: Request, services: Services) -> Caller | None:
    """The logged-in web user as a Caller, or None when the cookie is not a valid session of an existing user."""
    sessions = await web_sessions(request)
    session = sessions.session_of(request, services)
    if session is None or await services.users.get(session.user) is None:
        return None
    if request.method not in _SAFE_METHODS and not sessions.signer.check_csrf(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise HTTPException(
            status_code=403,
            detail=f"missing or invalid {CSRF_HEADER} header for this web session; reload the page and try again",
        )
    return Caller(user=session.user, via="web")
