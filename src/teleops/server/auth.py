"""Who is calling: ingest tokens for senders, API tokens for people and scripts.

The front door (server/front_door.py) runs `authenticate_api` before any body is read and leaves the verified
`Caller` in the ASGI scope under `VERIFIED_CALLER`; `require_api_caller` then takes it from there, so a request
is verified once. The same goes for an ingest token under `VERIFIED_INGEST_TOKEN`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from teleops.server.services import Services
from teleops.server.session import CSRF_HEADER, SESSION_COOKIE, web_sessions
from teleops.server.web_signin import enrolment_required
from teleops.store.tokens import TokenKind

__all__ = [
    "VERIFIED_CALLER",
    "VERIFIED_INGEST_TOKEN",
    "Caller",
    "authenticate_api",
    "credential_from",
    "require_api_caller",
    "services_of",
]

# ASGI scope keys the front door fills in once it has verified the request's credentials.
VERIFIED_CALLER = "teleops.caller"
VERIFIED_INGEST_TOKEN = "teleops.ingest_token"  # noqa: S105 (a scope key, not a secret)


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    via: str  # "api-token:NAME" — recorded with every action


def services_of(request: HTTPConnection) -> Services:
    services: Services = request.app.state.services
    return services


def credential_from(connection: HTTPConnection) -> str | None:
    """The secret from `Authorization: Bearer X` or HTTP Basic (password = token; for senders that only do Basic)."""
    values = connection.headers.getlist("authorization")
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
    """FastAPI dependency: the caller the front door verified, else `authenticate_api` (see there)."""
    verified = request.scope.get(VERIFIED_CALLER)
    if isinstance(verified, Caller):
        return verified
    return await authenticate_api(request)


async def authenticate_api(connection: HTTPConnection) -> Caller:
    """A live API token, else 401 saying how to get one. Reads headers and cookies only, never the body.

    Without an Authorization header, a web UI session cookie is accepted too; then any method that
    changes state must carry the session's CSRF token in `X-CSRF-Token` (403 otherwise).
    Raises HTTPException (401, 403) and StorageUnavailable (the token or session could not be read).
    """
    secret = credential_from(connection)
    services = services_of(connection)
    if secret is None and not connection.headers.getlist("authorization") and SESSION_COOKIE in connection.cookies:
        caller = await _session_caller(connection, services)
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


async def _session_caller(connection: HTTPConnection, services: Services) -> Caller | None:
    """The logged-in web user as a Caller, or None when the cookie is not a valid session of an existing user."""
    sessions = await web_sessions(connection)
    session = await sessions.session_of(connection, services)
    if session is None or await services.users.get(session.user) is None:
        return None
    if await enrolment_required(services, session.user):  # must enrol TOTP first (docs/web-ui.md): no API either
        return None
    if connection.scope.get("method") not in _SAFE_METHODS and not sessions.signer.check_csrf(
        session, connection.headers.get(CSRF_HEADER)
    ):
        raise HTTPException(
            status_code=403,
            detail=f"missing or invalid {CSRF_HEADER} header for this web session; reload the page and try again",
        )
    return Caller(user=session.user, via="web")
