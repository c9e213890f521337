"""Web UI sessions: a signed cookie naming a server-side session row, per-session CSRF tokens, login throttling.

The cookie is `v1.<payload>.<signature>`: payload is base64url JSON `{"u": user, "s": session id, "t": issued}`,
signature is HMAC-SHA256 under a key generated once and kept in the database (all replicas share it).

A good signature is not enough (issue #18: a cookie used to outlive its logout). The session id names a row in
`web_sessions` (store/web_sessions.py), and every request reads it: the session is live only while the row is
not revoked, was seen within `server.session_idle` (30m), started within `server.session_lifetime` (12h), and its
user still has the role they logged in with. Logout revokes the row; a password change or a role change revokes
all of the user's rows in the same transaction. The state is in the database, not in process memory, and nothing
is cached, so every replica refuses a revoked cookie on its very next request. The signing key is a database row
too (store/server_keys.py), so a cookie or CSRF token issued by one replica is good on every other.

Why a row per session rather than a per-user "epoch" in the cookie: logout must end *this* session and not the
user's other browsers, idle expiry needs a last-seen time per session anyway, and rows show who is logged in.
`last_seen_at` is written at most once a minute (or a quarter of the idle time, if shorter), so reads stay reads;
a session therefore ends between `session_idle` minus that interval and `session_idle` after its last request.

Cookies are HttpOnly, SameSite=Strict, and Secure when `server.public_url` is https or the request came over
https; their Max-Age is the session lifetime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from teleops.server.services import Services
from teleops.store.server_keys import server_key
from teleops.store.web_sessions import WebSessionStore

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "SESSION_IDLE",
    "SESSION_TTL",
    "Session",
    "SessionSigner",
    "WebSessions",
    "web_sessions",
]

SESSION_COOKIE = "teleops_session"
LOGIN_COOKIE = "teleops_login"  # a nonce binding the login form's CSRF token to this browser
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=12)  # the default absolute lifetime (server.session_lifetime)
SESSION_IDLE = timedelta(minutes=30)  # the default idle time (server.session_idle)
_TOUCH_EVERY = timedelta(minutes=1)
_KEY_NAME = "web-session-v1"


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    sid: str
    issued_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens under one secret key."""

    def __init__(self, key: bytes, *, ttl: timedelta = SESSION_TTL) -> None:
        if len(key) < 16:
            raise ValueError("the session key must be at least 16 bytes")
        self._key = key
        self.ttl = ttl

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\x00{message}".encode(), hashlib.sha256).digest())

    def issue(self, user: str, *, now: datetime, sid: str | None = None) -> str:
        """A cookie value for `user` naming session `sid` (default: a fresh random id; a new one every login, so
        no session fixation)."""
        sid = sid or secrets.token_urlsafe(16)
        payload = _b64(json.dumps({"u": user, "s": sid, "t": int(now.timestamp())}).encode())
        return f"v1.{payload}.{self._mac('session', payload)}"

    def verify(self, cookie: str | None, *, now: datetime) -> Session | None:
        """The session in `cookie`, or None when it is missing, malformed, forged or older than the TTL."""
        if not cookie:
            return None
        version, _, rest = cookie.partition(".")
        payload, _, signature = rest.partition(".")
        if version != "v1" or not payload or not hmac.compare_digest(signature, self._mac("session", payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            user, sid, issued = str(data["u"]), str(data["s"]), int(data["t"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        issued_at = datetime.fromtimestamp(issued, tz=now.tzinfo)
        if not timedelta(minutes=-5) <= now - issued_at <= self.ttl:
            return None
        return Session(user, sid, issued_at)

    def csrf_token(self, session: Session) -> str:
        """The token forms and the UI's own API calls must carry for this session."""
        return self._mac("csrf", session.sid)

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def login_csrf_token(self, nonce: str) -> str:
        """The login form's token, bound to the nonce in the LOGIN_COOKIE (there is no session yet)."""
        return self._mac("login", nonce)

    def check_login_csrf(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce) and bool(token) and hmac.compare_digest(str(token), self.login_csrf_token(str(nonce)))


@dataclass(slots=True)
class WebSessions:
    """What the web UI needs per process: the signer (key from the database) and the session rows. Nothing in it
    is this process's own state: every replica builds the same from the database."""

    signer: SessionSigner
    secure_cookies: bool
    store: WebSessionStore
    idle: timedelta = SESSION_IDLE

    @property
    def lifetime(self) -> timedelta:
        return self.signer.ttl

    async def session_of(self, connection: HTTPConnection, services: Services) -> Session | None:
        """The live session carried by this request or WebSocket, else None (see the module docstring).

        Raises StorageUnavailable when the session row cannot be read: no database, no session.
        """
        now = services.clock()
        session = self.signer.verify(connection.cookies.get(SESSION_COOKIE), now=now)
        if session is None:
            return None
        live = await self.store.check(
            session.sid,
            now=now,
            idle=self.idle,
            lifetime=self.lifetime,
            touch_every=min(_TOUCH_EVERY, self.idle / 4),
        )
        return session if live is not None and live.user == session.user else None

    async def start(self, user: str, *, now: datetime, audit_data: Mapping[str, Any]) -> str:
        """A cookie value for a new session of `user`, recorded and audited as `login.succeeded` first.

        Raises StorageUnavailable or AuditUnavailable when that could not be written: then there is no session.
        """
        sid = secrets.token_urlsafe(32)
        await self.store.start(sid, user, now=now, lifetime=self.lifetime, audit_data=audit_data)
        return self.signer.issue(user, now=now, sid=sid)

    async def end(self, session: Session, *, now: datetime, audit_data: Mapping[str, Any] | None) -> bool:
        """Revoke `session` (logout), audited as `logout` unless `audit_data` is None; see WebSessionStore.end."""
        return await self.store.end(session.sid, now=now, user=session.user, audit_data=audit_data)

    def secure(self, connection: HTTPConnection) -> bool:
        """Whether cookies for this request must be Secure: the public URL or the request itself is https."""
        return self.secure_cookies or connection.url.scheme in ("https", "wss")

    def set_session_cookie(self, response: Response, connection: HTTPConnection, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self.lifetime.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=self.secure(connection),
            path="/",
        )

    def clear_session_cookie(self, response: Response, connection: HTTPConnection) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure(connection)
        )


async def web_sessions(connection: HTTPConnection) -> WebSessions:
    """The app's WebSessions, created on first use (reads or creates the signing key in the database).

    Raises StorageUnavailable when the key cannot be read.
    """
    state = connection.app.state
    existing: WebSessions | None = getattr(state, "web_sessions", None)
    if existing is not None:
        return existing
    services: Services = state.services
    server = services.settings.server
    # Two first requests racing here both read the same key (server_key is create-once); the later
    # assignment wins and nothing is lost.
    key = await server_key(services.db, _KEY_NAME, now=services.clock())
    created = WebSessions(
        signer=SessionSigner(key, ttl=server.session_lifetime.timedelta),
        secure_cookies=server.base_url().startswith("https://"),
        store=WebSessionStore(services.db),
        idle=server.session_idle.timedelta,
    )
    existing = getattr(state, "web_sessions", None)
    if existing is None:
        state.web_sessions = existing = created
    return existing
