"""The HTTP front door: who may send a body, how big, and how slowly, decided before one byte of it is read.

Issue #18: routes used to read the whole body before checking the caller, so two 300 MB bodies without a token
took the controller to 1.9 GB, an unauthenticated caller learnt about its body's mistakes (422 instead of 401),
and stalled uploads were held open for ever. This pure ASGI middleware is the outermost layer of the app. For
each HTTP request it looks the path up in `DOORS` (path → credential kind, body cap) and then, in this order:

1. an unknown path is answered 404, a route that is switched off (Telegram not in webhook mode, Slack not in
   Events API mode) 404, without reading the body;
2. the credential the door names is checked from the headers alone: an API token or a web session (+ CSRF) for
   `/api/v1/…`, an ingest token for `/api/v1/alerts/…`, Telegram's secret header (constant-time), the presence
   and freshness of Slack's signature headers (the signature itself covers the body, so the gateway checks it
   once the capped body is in), a live session for form posts under `/ui/`. A refusal (401, 403, or a 303 to
   the login page) is sent before the body; the verified caller is left in the scope (server/auth.py) so the
   route does not verify it again;
3. a declared `Content-Length` over the door's cap is answered 413 at once; a chunked body is cut at the cap
   (413) as it arrives;
4. a body that has not fully arrived `server.body_timeout` after the request's headers is answered 408.

Every refusal sent while the client may still be sending a body carries `Connection: close`, so uvicorn closes
the socket instead of reading the rest of the body to find the next request. So does a route's answer sent before
it read a chunked body (its rest is unbounded); one sent before it read a body of declared length (at most the cap)
keeps the connection, and uvicorn skips the rest of that body. What an unauthenticated request can
cost is therefore its headers (uvicorn's limits) plus at most the cap of a door that authenticates in the body:
8 KiB (`/ui/login`), 64 KiB (PagerDuty's `routing_key`, when no Authorization header is sent) and 256 KiB (Slack
Events API, whose signature is over the body). The number of connections is bounded by `server.max_connections`
(uvicorn's `limit_concurrency`, cli/serve.py), idle keep-alive connections by `server.keepalive_timeout`, and
headers that never finish by `server.header_timeout` (server/header_deadline.py).

WebSocket handshakes pass through: they carry no body, the agent hub and the console check their own
credentials, and a frame's size is capped by uvicorn's `ws_max_size`.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from teleops.config.duration import parse_duration
from teleops.server.auth import VERIFIED_CALLER, VERIFIED_INGEST_TOKEN, authenticate_api, credential_from
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
from teleops.sources.registry import get_source
from teleops.store.database import StorageUnavailable
from teleops.store.tokens import TokenKind

__all__ = ["BODY_TOKEN_CAP", "DOORS", "Credential", "Door", "FrontDoor", "door_for"]

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


# A PagerDuty-style sender that authenticates with `routing_key` in the body (no Authorization header) may send
# this much: an Events API v2 event is a few KiB; larger batches send the token as a header.
BODY_TOKEN_CAP = 64 * KIB

# First match wins, so the specific rows come before the prefixes that contain them.
DOORS: tuple[Door, ...] = (
    Door("/api/v1/alerts/", Credential.INGEST, None, prefix=True),
    Door("/api/v1/chat/telegram/webhook", Credential.TELEGRAM_SECRET, 1024 * KIB),
    Door("/api/v1/chat/slack/events", Credential.SLACK_SIGNATURE, 256 * KIB),
    Door("/api/v1/commands/batch", Credential.API, None),  # up to 1000 hosts of 255 characters
    # Heartbeat pings (routes/heartbeats.py): an ingest token; the body is ignored (an Alertmanager webhook's JSON).
    Door(PING_PREFIX, Credential.HEARTBEAT_PING, 64 * KIB, prefix=True, suffix=PING_SUFFIX),
    Door(OPSGENIE_PING_PREFIX, Credential.HEARTBEAT_PING, 64 * KIB, prefix=True, suffix=PING_SUFFIX),
    Door("/api/v1/", Credential.API, 64 * KIB, prefix=True),
    Door("/ui/login", Credential.LOGIN_FORM, 8 * KIB),
    Door("/ui/static/", Credential.PUBLIC, 0, prefix=True),
    Door("/ui/", Credential.WEB_SESSION, 16 * KIB, prefix=True),
    Door("/ui", Credential.PUBLIC, 0),
    Door("/static/swagger-ui/", Credential.PUBLIC, 0, prefix=True),
    Door("/", Credential.PUBLIC, 0),
    Door("/healthz", Credential.PUBLIC, 0),
    Door("/readyz", Credential.PUBLIC, 0),
    Door("/metrics", Credential.PUBLIC, 0),
    Door("/docs", Credential.PUBLIC, 0),
    Door("/openapi.json", Credential.PUBLIC, 0),
)

_ALERTS_PREFIX = "/api/v1/alerts/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SLACK_MAX_SKEW_S = 300  # as chat/slack/signature.py (MAX_SKEW_S); the signature itself is checked there


def door_for(path: str) -> Door | None:
    """The table row for `path`, or None for a path the controller does not serve."""
    for door in DOORS:
        if door.matches(path):
            return door
    return None


class _Refusal(Exception):
    """An answer the front door sends instead of the app's."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> _Refusal:
    return _Refusal(JSONResponse({"detail": detail}, status_code=status, headers=headers))


class FrontDoor:
    """The ASGI middleware described in the module docstring; add it last (outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = _may_have_body(headers)
        services: Services | None = getattr(scope["app"].state, "services", None) if "app" in scope else None
        try:
            if services is None:
                raise _json(503, "the controller is still starting; retry in a few seconds", {"Retry-After": "5"})
            cap = await self._admit(scope, headers, services)
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > cap):
                raise (
                    _too_large(scope, services, cap)
                    if declared.isdigit()
                    else _json(400, "Content-Length is not a number; send the body's size in bytes")
                )
        except _Refusal as refusal:
            await _answer(refusal.response, scope, receive, send, close=has_body)
            return
        except StorageUnavailable as exc:
            log.warning("front_door.storage_unavailable", error=str(exc))
            detail = "the database is unavailable, so credentials cannot be checked; retry in a minute"
            unavailable = _json(503, detail, {"Retry-After": "5"})
            await _answer(unavailable.response, scope, receive, send, close=has_body)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        timeout = parse_duration(services.settings.server.body_timeout)
        guard = _BodyGuard(
            scope, receive, send, cap=cap, timeout=timeout, too_large=lambda: _too_large(scope, services, cap)
        )
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.refused:
                raise
            # The app saw a disconnect where its body was cut (413/408, already answered); whatever it raised
            # about that is a consequence of our answer, not a fault.
            log.debug("front_door.cut_body_error", path=scope["path"], exc_info=True)

    async def _admit(self, scope: Scope, headers: Headers, services: Services) -> int:
        """The body cap for this request once its credentials are good; raises _Refusal otherwise."""
        path: str = scope["path"]
        door = door_for(path)
        if door is None:
            raise _json(404, f"no such path {path[:80]!r}; the API is described at /docs")
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
                    raise _json(exc.status_code, str(exc.detail), dict(exc.headers or {})) from exc
                return cap
            case Credential.INGEST:
                return await _admit_ingest(path, connection, services, cap, scope)
            case Credential.HEARTBEAT_PING:
                secret = ping_secret(connection)
                token = await services.tokens.verify(TokenKind.INGEST, secret) if secret else None
                if token is None:
                    raise _Refusal(ping_unauthorized(path))
                scope[VERIFIED_INGEST_TOKEN] = token
                return cap
            case Credential.TELEGRAM_SECRET:
                _admit_telegram(headers, services)
                return cap
            case Credential.SLACK_SIGNATURE:
                _admit_slack(headers, services)
                return cap
            case Credential.WEB_SESSION:
                if scope["method"] in _SAFE_METHODS and not _may_have_body(headers):
                    return cap  # pages: the route sends whoever is not logged in to the login page
                sessions = await web_sessions(connection)
                if await sessions.session_of(connection, services) is None:
                    raise _Refusal(RedirectResponse("/ui/login", status_code=303))
                return cap


async def _admit_ingest(path: str, connection: HTTPConnection, services: Services, cap: int, scope: Scope) -> int:
    source = path[len(_ALERTS_PREFIX) :]
    spec = get_source(source) if source and "/" not in source else None
    if spec is None:
        raise _json(404, f"unknown alert source {source[:40]!r}; see /docs for the sources TeleOps receives")
    secret = credential_from(connection)
    if secret is not None:
        token = await services.tokens.verify(TokenKind.INGEST, secret)
        if token is None:
            raise _Refusal(ingest_unauthorized(services.metrics, source))
        scope[VERIFIED_INGEST_TOKEN] = token
        return cap
    if spec.token_field is None or connection.headers.getlist("authorization"):
        raise _Refusal(ingest_unauthorized(services.metrics, source))
    return min(cap, BODY_TOKEN_CAP)  # the token is in the body: the route reads at most this much to find it


def _admit_telegram(headers: Headers, services: Services) -> None:
    telegram = services.settings.telegram
    expected = telegram.webhook_secret
    if telegram.mode != "webhook" or expected is None:
        raise _Refusal(
            PlainTextResponse(
                "Telegram webhook mode is not enabled; set telegram.mode: webhook and telegram.webhook_secret",
                status_code=404,
            )
        )
    given = headers.getlist("x-telegram-bot-api-secret-token")
    if len(given) != 1 or not hmac.compare_digest(given[0].encode(), expected.get_secret_value().encode()):
        raise _Refusal(PlainTextResponse("missing or wrong X-Telegram-Bot-Api-Secret-Token", status_code=403))


def _admit_slack(headers: Headers, services: Services) -> None:
    if services.settings.slack.mode != "events":
        raise _Refusal(
            PlainTextResponse(
                "Slack Events API mode is not enabled; set slack.mode: events and slack.signing_secret",
                status_code=404,
            )
        )
    signatures = headers.getlist("x-slack-signature")
    timestamps = headers.getlist("x-slack-request-timestamp")
    now = services.clock().timestamp()
    fresh = (
        len(signatures) == 1
        and len(timestamps) == 1
        and signatures[0].strip().startswith("v0=")
        and timestamps[0].strip().isdigit()
        and len(timestamps[0].strip()) <= 12
        and abs(now - int(timestamps[0].strip())) <= _SLACK_MAX_SKEW_S
    )
    if not fresh:
        raise _Refusal(PlainTextResponse("invalid Slack signature", status_code=401))


def _too_large(scope: Scope, services: Services, cap: int) -> _Refusal:
    path: str = scope["path"]
    if path.startswith(_ALERTS_PREFIX):
        services.metrics.alerts_rejected.labels(path[len(_ALERTS_PREFIX) :][:40], "413").inc()
        if cap == services.settings.server.max_body_bytes:
            return _json(413, f"body is larger than {cap} bytes (server.max_body_bytes); split the batch")
        return _json(
            413,
            f"body is larger than {cap} bytes, the limit when the token is in the body; send the token as "
            "`Authorization: Bearer TOKEN` to send up to server.max_body_bytes",
        )
    if cap == 0:
        return _json(413, f"{path[:80]} takes no request body; send the request without one")
    return _json(413, f"request body is larger than {cap} bytes, the limit for {path[:80]}; send less")


def _may_have_body(headers: Headers) -> bool:
    declared = headers.get("content-length")
    return "transfer-encoding" in headers or (declared is not None and declared != "0")


async def _answer(response: Response, scope: Scope, receive: Receive, send: Send, *, close: bool) -> None:
    if close:
        response.headers["Connection"] = "close"
    await response(scope, receive, send)


class _BodyGuard:
    """Wraps receive/send for one request: the body is cut at `cap` (413) and at `timeout` seconds (408).

    Once the guard has answered, the app's `receive` gets `http.disconnect` and what the app sends is dropped.
    """

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, *, cap: int, timeout: float, too_large: Callable[[], _Refusal]
    ) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._cap = cap
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._timeout = timeout
        self._too_large = too_large
        self._received = 0
        self._complete = False
        self._chunked = "transfer-encoding" in Headers(scope=scope)
        self._started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        if self._complete:
            return await self._receive()  # after the body: the app only waits for a disconnect
        try:
            async with asyncio.timeout(max(self._deadline - asyncio.get_running_loop().time(), 0)):
                message = await self._receive()
        except TimeoutError:
            detail = (
                f"the request body did not arrive within {self._timeout:g}s (server.body_timeout); "
                "send it at once, or raise the limit"
            )
            await self._refuse(_json(408, detail))
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._cap:
                await self._refuse(self._too_large())
                return {"type": "http.disconnect"}
            if not message.get("more_body", False):
                self._complete = True
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self._started = True
            if not self._complete and self._chunked:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    async def _refuse(self, refusal: _Refusal) -> None:
        self.refused = True
        log.info("front_door.body_refused", path=self._scope["path"], status=refusal.response.status_code)
        if self._started:
            return  # the app already answered; the connection closes after its response
        refusal.response.headers["Connection"] = "close"
        await refusal.response(self._scope, _no_receive, self._send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
