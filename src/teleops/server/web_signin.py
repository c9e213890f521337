"""Web sign-in beyond the password: the TOTP step, who must enrol first, and the lockout (issue #24).

The TOTP state is the one chat and the CLI use (store/twofactor.py): one secret, one failure count and one lock
per person. A code at sign-in is judged like a chat `/otp` code (replay, throttle, lock after
`twofactor.lockout_after` wrong codes until an admin unlocks), and an accepted one elevates the person for
`twofactor.elevation` like any other accepted code.

Between the password and the code there is no session yet: the browser holds a *sign-in ticket*, an HMAC-signed
(user, login nonce, time) that is good for five minutes and only together with the login form's nonce cookie, so
a ticket cannot be replayed from another browser. Nothing about it is stored.

Failed passwords also count: `lockout_after` of them in a row lock the user's web sign-in for
`twofactor.web_lockout` (default 15m), and at most 10 a minute per (user, address) are tried at all. Both counts
are in the database (store/signin_guard.py), so every replica sees the same ones and a restart forgets none; the
2FA lock is there too and lasts until an admin unlocks it. The ticket key is a database row (store/server_keys.py),
so the code step may land on another replica than the password step.

Who must enrol (`twofactor.web_signin`): `enrolled` asks a code only of those who enrolled; the default,
`required_for_commands`, also makes people enrol before anything else when their role has an allow rule that
asks for a code (they cannot run those commands without one anyway); `required` makes everyone enrol. People
who step up with Duo (`users[].twofactor: duo`) are never forced to enrol TOTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.requests import HTTPConnection

from teleops.commands.authorize import current_policy
from teleops.domain.policy import Effect, Policy
from teleops.server.services import Services
from teleops.store.server_keys import server_key
from teleops.store.signin_guard import SignInGuard

__all__ = ["TICKET_TTL", "SignInTickets", "WebSignIn", "enrolment_required", "web_signin"]

TICKET_TTL = timedelta(minutes=5)
_KEY_NAME = "web-signin-v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SignInTickets:
    """Issues and checks the "password was right, code pending" ticket (see the module docstring)."""

    def __init__(self, key: bytes, *, ttl: timedelta = TICKET_TTL) -> None:
        self._key = key
        self.ttl = ttl

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"signin\x00{payload}".encode(), hashlib.sha256).digest())

    def issue(self, user: str, nonce: str, *, now: datetime) -> str:
        payload = _b64(json.dumps({"u": user, "n": nonce, "t": int(now.timestamp())}).encode())
        return f"{payload}.{self._mac(payload)}"

    def check(self, ticket: str, nonce: str | None, *, now: datetime) -> str | None:
        """The user the ticket was issued to, or None when it is forged, expired or from another browser."""
        payload, _, signature = ticket.partition(".")
        if not nonce or not payload or not hmac.compare_digest(signature, self._mac(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            user, bound, issued = str(data["u"]), str(data["n"]), int(data["t"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        age = now.timestamp() - issued
        if not hmac.compare_digest(bound, nonce) or not -60 <= age <= self.ttl.total_seconds():
            return None
        return user


@dataclass(slots=True)
class WebSignIn:
    tickets: SignInTickets
    guard: SignInGuard  # the throttle and the lockout, counted in the database (store/signin_guard.py)


async def web_signin(connection: HTTPConnection) -> WebSignIn:
    """The app's WebSignIn, created on first use (the ticket key is read or created in the database).

    Raises StorageUnavailable when the key cannot be read.
    """
    state = connection.app.state
    existing: WebSignIn | None = getattr(state, "web_signin", None)
    if existing is not None:
        return existing
    services: Services = state.services
    twofactor = services.settings.twofactor
    key = await server_key(services.db, _KEY_NAME, now=services.clock())
    created = WebSignIn(
        SignInTickets(key),
        SignInGuard(services.db, lockout_after=twofactor.lockout_after, lockout_for=twofactor.web_lockout.timedelta),
    )
    existing = getattr(state, "web_signin", None)
    if existing is None:
        state.web_signin = existing = created
    return existing


def role_needs_code(policy: Policy, role: str) -> bool:
    """True when some allow rule of `role` asks for a code (always, or before a change)."""
    return any(rule.effect is Effect.ALLOW and rule.require_2fa for rule in policy.roles.get(role, ()))


async def enrolment_required(services: Services, user: str) -> bool:
    """Whether `user` must enrol TOTP before using the web UI (and has not): see the module docstring.

    Raises StorageUnavailable.
    """
    settings = services.settings
    mode = settings.twofactor.web_signin
    if mode == "enrolled" or settings.twofactor_method(user) == "duo":
        return False
    if mode == "required_for_commands":
        record = await services.users.get(user)
        if record is None or not role_needs_code(current_policy(), record.role):
            return False
    return await services.stepup.state(user) is None
