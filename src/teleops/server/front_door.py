"""The HTTP front door: who may send a body, how big, and how slowly, decided before one byte of it is read.

Issue #18: routes used to read the whole body before checking the caller, so two 300 MB bodies without a token
took the controller to 1.9 GB, an unauthenticated caller learnt about its body's mistakes (422 instead of 401),
and stalled uploads were held open for ever. This pure ASGI middleware is the outermost layer of the app. For
each HTTP request it looks the path up in `DOORS` (path → credential kind, body cap) and then, in this order:

1. an unknown path is answered 404, a route that is switched off (Telegram not in webhook mode, Slack not in
   Events API mode) 404, without reading the body;
2. the credential the door names is checked from the headers alone: an API token or a web session (+ CSRF) for
   `/api/v1/…`, an ingest token for `/api/v1/alerts/…`, Telegram's secret header (constant-time), Slack's
   signature headers (server/webhook_doors.py: one `v0=` + 64 hex signature and a timestamp within 5 minutes;
   the HMAC itself covers the body, so the gateway checks it once the capped body is in), a live session for
   form posts under `/ui/`. A refusal (401, 403, or a 303 to the login page) is sent before the body; the
   verified caller is left in the scope (server/auth.py) so the route does not verify it again;
3. a declared `Content-Length` over the door's cap is answered 413 at once; a chunked body is cut at the cap
   (413) as it arrives;
4. a body that has not fully arrived `server.body_timeout` after the request's headers is answered 408.

Two doors must read some of a body before they know the caller, and each is bounded:

* PagerDuty's `routing_key` (no Authorization header): only the body's first 4 KiB are read to find it
  (server/body_token.py); the rest, up to `server.max_body_bytes`, only once it names a valid ingest token, and
  the route then requires the parsed body to carry that same key. Not found there: 401 saying to put it first;
* Slack's Events API: at most 128 KiB each, and at most 8 such bodies being read at once (the next is answered
  503 with Retry-After before its body is read): 1 MiB in all, however many connections are open.

Every refusal sent while the client may still be sending a body carries `Connection: close`, so uvicorn closes
the socket instead of reading the rest of the body to find the next request. So does a route's answer sent before
it read a chunked body (its rest is unbounded); one sent before it read a body of declared length (at most the cap)
keeps the connection, and uvicorn skips the rest of that body. What an unauthenticated request can cost is
therefore its headers (uvicorn's limits) plus at most 4 KiB (`/ui/login`, PagerDuty's `routing_key` prefix), or
128 KiB for one of at most 8 Slack Events API bodies at a time (only in `slack.mode: events`; the default Socket
Mode has no inbound HTTP). The number of connections is bounded by `server.max_connections` (uvicorn's
`limit_concurrency`, cli/serve.py), idle keep-alive connections by `server.keepalive_timeout`, and headers that
never finish by `server.header_timeout` (server/header_deadline.py).

WebSocket handshakes pass through: they carry no body, the agent hub and the console check their own
credentials, and a frame's size is capped by uvicorn's `ws_max_size`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import structlog
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from teleops.server.auth import VERIFIED_CALLER, VERIFIED_INGEST_TOKEN, authenticate_api, credential_from
from teleops.server.body_guard import BodyGuard, Once, Refusal, json_refusal, no_receive
from teleops.server.body_token import BODY_TOKEN, PREFIX_BYTES, leading_field, read_prefix, replaying
from teleops.server.routes.alerts import unauthorized as ingest_unauthorized
from teleops.server.routes.heartbeats import (
    OPSGENIE_PING_PREFIX,
    PING_PREFIX,
    PING_SUFFIX,
    ping_secret,
    ping_unauthorized,
)
from teleops.server.services import Services
from teleops.server.session import web_sessions
from teleops.server.webhook_doors import SLACK_BODY_CAP, SlackReads, admit_slack, admit_telegram
from teleops.sources.registry import get_source
from teleops.store.database import StorageUnavailable
from teleops.store.tokens import TokenKind

__all__ = ["BODY_TOKEN_CAP", "DOORS", "LOGIN_FORM_CAP", "Credential", "Door", "FrontDoor", "door_for"]

log = structlog.get_logger(__name__)

KIB = 1024


class Credential(enum.Enum):
    """What a request must show, in its headers, before its body is read."""

    PUBLIC = "none"  # health, metrics, docs, static files: no body at all
    API = "api token or web session"
    INGEST = "ingest token"
    TELEGRAM_SECRET = "telegram secret header"  # noqa: S105 (a description, not a secret)
    SLACK_SIGNATURE = "slack signature headers"
    WEB_SESSION = "web session"  # for anything but GET/HEAD; pages themselves redirect to the login
    LOGIN_FORM = "none yet (login form)"
    HEARTBEAT_PING = "ingest token (Bearer, Basic or GenieKey)"


@dataclass(frozen=True, slots=True)
class Door:
    """One row of the table: requests whose path is `path` (or starts with it, when `prefix`)."""

    path: str
    credential: Credential
    body_cap: int | None  # bytes; None means `server.max_body_bytes`
    prefix: bool = False
    suffix: str = ""  # with `prefix`: the path must also end with this, after at least one character

    def matches(self, path: str) -> bool:
        if not self.prefix:
            return path == self.path
        return path.startswith(self.path) and (
            not self.suffix or (path.endswith(self.suffix) and len(path) > len(self.path) + len(self.suffix))
        )


# A PagerDuty-style sender that authenticates with `routing_key` in the body (no Authorization header): the door
# reads this much of the body to find it (server/body_token.py); the rest only once the key is a valid token.
BODY_TOKEN_CAP = PREFIX_BYTES
# A user name, a password, the CSRF token and where to go next (routes/ui_login.py): a login form is far smaller.
LOGIN_FORM_CAP = 4 * KIB

# First match wins, so the specific rows come before the prefixes that contain them.
DOORS: tuple[Door, ...] = (
    Door("/api/v1/alerts/", Credential.INGEST, None, prefix=True),
    Door("/api/v1/chat/telegram/webhook", Credential.TELEGRAM_SECRET, 1024 * KIB),
    Door("/api/v1/chat/slack/events", Credential.SLACK_SIGNATURE, SLACK_BODY_CAP),
    Door("/api/v1/commands/batch", Credential.API, None),  # up to 1000 hosts of 255 characters
    # Heartbeat pings (routes/heartbeats.py): an ingest token; the body is ignored (an Alertmanager webhook's JSON).
    Door(PING_PREFIX, Credential.HEARTBEAT_PING, 64 * KIB, prefix=True, suffix=PING_SUFFIX),
    Door(OPSGENIE_PING_PREFIX, Credential.HEARTBEAT_PING, 64 * KIB, prefix=True, suffix=PING_SUFFIX),
    Door("/api/v1/", Credential.API, 64 * KIB, prefix=True),
    Door("/ui/login", Credential.LOGIN_FORM, LOGIN_FORM_CAP),
    Door("/ui/login/code", Credential.LOGIN_FORM, LOGIN_FORM_CAP),  # the TOTP step: no session until the code is right
    Door("/ui/static/", Credential.PUBLIC, 0, prefix=True),
    Door("/ui/", Credential.WEB_SESSION, 16 * KIB, prefix=True),
    Door("/ui", Credential.PUBLIC, 0),
    Door("/static/swagger-ui/", Credential.PUBLIC, 0, prefix=True),
    # iCal feeds (routes/ical.py): the secret in the URL is the credential, checked by the route; no body.
    Door("/ical/", Credential.PUBLIC, 0, prefix=True, suffix=".ics"),
    Door("/", Credential.PUBLIC, 0),
    Door("/healthz", Credential.PUBLIC, 0),
    Door("/readyz", Credential.PUBLIC, 0),
    Door("/metrics", Credential.PUBLIC, 0),
    Door("/docs", Credential.PUBLIC, 0),
    Door("/openapi.json", Credential.PUBLIC, 0),
)

_ALERTS_PREFIX = "/api/v1/alerts/"
_SLACK_DOOR = next(d for d in DOORS if d.credential is Credential.SLACK_SIGNATURE)
_BODY_TOKEN_PENDING = "teleops.body_token_pending"  # noqa: S105 (a scope key)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def door_for(path: str) -> Door | None:
    """The table row for `path`, or None for a path the controller does not serve."""
    for door in DOORS:
        if door.matches(path):
            return door
    return None


class FrontDoor:
    """The ASGI middleware described in the module docstring; add it last (outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._slack_reads = SlackReads()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = _may_have_body(headers)
        services: Services | None = getattr(scope["app"].state, "services", None) if "app" in scope else None
        try:
            if services is None:
                raise json_refusal(
                    503, "the controller is still starting; retry in a few seconds", {"Retry-After": "5"}
                )
            cap = await self._admit(scope, headers, services)
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > cap):
                raise (
                    _too_large(scope, services, cap)
                    if declared.isdigit()
                    else json_refusal(400, "Content-Length is not a number; send the body's size in bytes")
                )
        except Refusal as refusal:
            await _answer(refusal.response, scope, receive, send, close=has_body)
            return
        except StorageUnavailable as exc:
            log.warning("front_door.storage_unavailable", error=str(exc))
            detail = "the database is unavailable, so credentials cannot be checked; retry in a minute"
            unavailable = json_refusal(503, detail, {"Retry-After": "5"})
            await _answer(unavailable.response, scope, receive, send, close=has_body)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        slack = door_for(scope["path"]) is _SLACK_DOOR
        if slack and (busy := self._slack_reads.enter()) is not None:
            await _answer(busy, scope, receive, send, close=True)
            return
        reading = services.metrics.slack_unverified_bodies
        if slack:
            reading.set(self._slack_reads.reading)

        def left() -> None:  # the whole body is in (the gateway checks its signature now), or the request ended
            self._slack_reads.leave()
            reading.set(self._slack_reads.reading)

        leave = Once(left if slack else None)
        try:
            await self._guarded(scope, receive, send, services, cap, leave)
        finally:
            leave()

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, services: Services, cap: int, on_body: Once
    ) -> None:
        """The app under a `BodyGuard`; a body-token request's prefix is checked first (`_admit_body_token`)."""
        timeout = services.settings.server.body_timeout.seconds
        guard = BodyGuard(
            scope,
            receive,
            send,
            cap=cap,
            timeout=timeout,
            too_large=lambda: _too_large(scope, services, cap),
            on_complete=on_body,
        )
        app_receive: Receive = guard.receive
        if scope.pop(_BODY_TOKEN_PENDING, False):
            admitted = await _admit_body_token(scope, guard, services, send)
            if admitted is None:
                return
            app_receive = admitted
        try:
            await self.app(scope, app_receive, guard.send)
        except Exception:
            if not guard.refused:
                raise
            # The app saw a disconnect where its body was cut (413/408, already answered); whatever it raised
            # about that is a consequence of our answer, not a fault.
            log.debug("front_door.cut_body_error", path=scope["path"], exc_info=True)

    async def _admit(self, scope: Scope, headers: Headers, services: Services) -> int:
        """The body cap for this request once its credentials are good; raises Refusal otherwise."""
        path: str = scope["path"]
        door = door_for(path)
        if door is None:
            raise json_refusal(404, f"no such path {path[:80]!r}; the API is described at /docs")
        server = services.settings.server
        cap = server.max_body_bytes if door.body_cap is None else door.body_cap
        connection = HTTPConnection(scope)
        match door.credential:
            case Credential.PUBLIC | Credential.LOGIN_FORM:
                return cap
            case Credential.API:
                try:
                    scope[VERIFIED_CALLER] = await authenticate_api(connection)
                except HTTPException as exc:
                    raise json_refusal(exc.status_code, str(exc.detail), dict(exc.headers or {})) from exc
                return cap
            case Credential.INGEST:
                return await _admit_ingest(path, connection, services, cap, scope)
            case Credential.HEARTBEAT_PING:
                secret = ping_secret(connection)
                token = await services.tokens.verify(TokenKind.INGEST, secret) if secret else None
                if token is None:
                    raise Refusal(ping_unauthorized(path))
                scope[VERIFIED_INGEST_TOKEN] = token
                return cap
            case Credential.TELEGRAM_SECRET:
                if (refused := admit_telegram(headers, services)) is not None:
                    raise Refusal(refused)
                return cap
            case Credential.SLACK_SIGNATURE:
                if (refused := admit_slack(headers, services)) is not None:
                    raise Refusal(refused)
                return cap
            case Credential.WEB_SESSION:
                if scope["method"] in _SAFE_METHODS and not _may_have_body(headers):
                    return cap  # pages: the route sends whoever is not logged in to the login page
                sessions = await web_sessions(connection)
                if await sessions.session_of(connection, services) is None:
                    raise Refusal(RedirectResponse("/ui/login", status_code=303))
                return cap


async def _admit_ingest(path: str, connection: HTTPConnection, services: Services, cap: int, scope: Scope) -> int:
    source = path[len(_ALERTS_PREFIX) :]
    spec = get_source(source) if source and "/" not in source else None
    if spec is None:
        raise json_refusal(404, f"unknown alert source {source[:40]!r}; see /docs for the sources TeleOps receives")
    secret = credential_from(connection)
    if secret is not None:
        token = await services.tokens.verify(TokenKind.INGEST, secret)
        if token is None:
            raise Refusal(ingest_unauthorized(services.metrics, source))
        scope[VERIFIED_INGEST_TOKEN] = token
        return cap
    if spec.token_field is None or connection.headers.getlist("authorization"):
        raise Refusal(ingest_unauthorized(services.metrics, source))
    scope[_BODY_TOKEN_PENDING] = spec.token_field  # checked in the body's first 4 KiB, before the rest is read
    return cap


async def _admit_body_token(scope: Scope, guard: BodyGuard, services: Services, send: Send) -> Receive | None:
    """Find the ingest token in the body's first `PREFIX_BYTES` (server/body_token.py) and verify it; returns the
    `receive` that replays the prefix to the route, or None when the request was answered (401, or the guard's
    408/413)."""
    path: str = scope["path"]
    source = path[len(_ALERTS_PREFIX) :]
    spec = get_source(source)
    field = spec.token_field if spec is not None else None
    messages, prefix, gone = await read_prefix(guard.receive)
    if guard.refused or gone:
        return None
    key = leading_field(prefix, field) if field is not None else None
    token = await services.tokens.verify(TokenKind.INGEST, key) if key else None
    if token is None:
        services.metrics.alerts_rejected.labels(source[:40], "401").inc()
        detail = (
            f"no valid ingest token: `{field}` was not found, or not valid, in the first {PREFIX_BYTES} bytes of "
            f"the body. Put `{field}` first in the JSON object, or send the token as `Authorization: Bearer TOKEN`"
        )
        refusal = JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await _answer(refusal, scope, no_receive, send, close=True)
        guard.refused = True
        return None
    scope[VERIFIED_INGEST_TOKEN] = token
    scope[BODY_TOKEN] = key
    return replaying(messages, guard.receive)


def _too_large(scope: Scope, services: Services, cap: int) -> Refusal:
    path: str = scope["path"]
    if path.startswith(_ALERTS_PREFIX):
        services.metrics.alerts_rejected.labels(path[len(_ALERTS_PREFIX) :][:40], "413").inc()
        return json_refusal(413, f"body is larger than {cap} bytes (server.max_body_bytes); split the batch")
    if cap == 0:
        return json_refusal(413, f"{path[:80]} takes no request body; send the request without one")
    return json_refusal(413, f"request body is larger than {cap} bytes, the limit for {path[:80]}; send less")


def _may_have_body(headers: Headers) -> bool:
    declared = headers.get("content-length")
    return "transfer-encoding" in headers or (declared is not None and declared != "0")


async def _answer(response: Response, scope: Scope, receive: Receive, send: Send, *, close: bool) -> None:
    if close:
        response.headers["Connection"] = "close"
    await response(scope, receive, send)
