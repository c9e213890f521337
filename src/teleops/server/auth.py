"""Who is calling: ingest tokens for senders, API tokens for people and scripts."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request

from teleops.server.services import Services
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
    """FastAPI dependency: a live API token, else 401 saying how to get one."""
    secret = credential_from(request)
    services = services_of(request)
    record = await services.tokens.verify(TokenKind.API, secret) if secret else None
    if record is None or record.user_name is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid API token; create one with `teleops token create api NAME --user USER` "
            "and send it as `Authorization: Bearer TOKEN`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Caller(user=record.user_name, via=f"api-token:{record.name}")
