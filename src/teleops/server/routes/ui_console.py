"""The console chat page and its WebSocket: the browser side of the console gateway.

Frames from the server: `{"type": "history", "user", "messages": [...]}` once, then `message` / `edit`
(a message view), `notice` (text for this tab only), `closed`. Every message view is decided for this tab's user
by the read rule (chat/console/read_rule.py): a command's line and output only for who may read it, else one
line in its place (the view then has `withheld`, the reason). Frames from the browser:
`{"type": "text", "text", "reply_to"?}` and `{"type": "button", "message_id", "data"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from teleops.chat.console.gateway import CONSOLE_PLATFORM, ConsoleGateway, ConsoleInputRejected, Subscriber
from teleops.chat.console.read_rule import ConsoleReaders
from teleops.server.routes.ui_common import UiUser, render_page, require_ui_user
from teleops.server.services import Services
from teleops.server.session import web_sessions
from teleops.server.web_signin import enrolment_required
from teleops.store.console_messages import ConsoleMessageStore
from teleops.store.database import StorageUnavailable
from teleops.store.identities import IdentityStore, LinkError

__all__ = ["console_gateway", "router"]

log = structlog.get_logger(__name__)

router = APIRouter()

# Close codes (RFC 6455 application range): the script shows a matching message and stops reconnecting.
CLOSE_POLICY = 1008
CLOSE_SESSION_ENDED = 4401


def console_gateway(app: FastAPI) -> ConsoleGateway:
    """The app's console gateway (app.py creates it in the lifespan; created here if it did not)."""
    gateway: ConsoleGateway | None = getattr(app.state, "console_gateway", None)
    if gateway is None:
        services: Services = app.state.services
        gateway = ConsoleGateway(
            ConsoleMessageStore(services.db),
            clock=services.clock,
            readers=ConsoleReaders(services.db, services.users),
        )
        app.state.console_gateway = gateway
    return gateway


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console_page(request: Request, user: Annotated[UiUser, Depends(require_ui_user)]) -> HTMLResponse:
    return render_page(request, "console.html", user=user)


def origin_allowed(websocket: WebSocket, services: Services) -> bool:
    """True when the handshake's Origin is this server (as addressed, or its public_url).

    Browsers always send Origin on WebSocket handshakes; a page on another site cannot forge it, so this
    stops cross-site WebSocket hijacking even where a cookie would be sent.
    """
    origin = websocket.headers.get("origin")
    if not origin:
        return False
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    allowed = {f"{scheme}://{websocket.headers.get('host', '')}".lower()}
    public = urlsplit(services.settings.server.base_url())
    if public.scheme and public.netloc:
        allowed.add(f"{public.scheme}://{public.netloc}".lower())
    return origin.lower().rstrip("/") in allowed


@router.websocket("/console/ws")
async def console_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    if not origin_allowed(websocket, services):
        log.warning("console.refused", reason="origin")
        await websocket.close(code=CLOSE_POLICY)
        return
    sessions = await web_sessions(websocket)
    session = await sessions.session_of(websocket, services)
    if session is None or await services.users.get(session.user) is None:
        log.warning("console.refused", reason="session")
        await websocket.close(code=CLOSE_POLICY)
        return
    if await enrolment_required(services, session.user):  # as every page and the API: enrol a second factor first
        log.warning("console.refused", reason="enrolment required", user=session.user)
        await websocket.close(code=CLOSE_POLICY, reason="set up your second factor first: /ui/account/2fa")
        return
    gateway = console_gateway(websocket.app)
    try:
        await _link_console_identity(services, session.user)
    except StorageUnavailable:
        await websocket.close(code=1011, reason="database unavailable; reload in a minute")
        return
    await websocket.accept()
    subscriber = gateway.subscribe(session.user)
    pump = asyncio.create_task(_pump(subscriber, websocket))
    try:
        history = await gateway.history(session.user)
        await websocket.send_json({"type": "history", "user": session.user, "messages": history})
        while not subscriber.closed:
            raw = await websocket.receive_text()
            if await sessions.session_of(websocket, services) is None:
                await websocket.close(code=CLOSE_SESSION_ENDED, reason="session ended; log in again")
                return
            await _handle(gateway, subscriber, session.user, raw)
    except WebSocketDisconnect:
        pass
    finally:
        gateway.unsubscribe(subscriber)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump


async def _link_console_identity(services: Services, user: str) -> None:
    """Bind the console account `user` to the TeleOps user `user`, once.

    For the console the login *is* the identity: the session proves who typed, so the console links
    itself through the same one-time-code path every platform uses (invite, then link), and the
    conversation pipeline identifies console events exactly like any other platform's.
    """
    identities = IdentityStore(services.db)
    if await identities.user_of(CONSOLE_PLATFORM, user) == user:
        return
    now = services.clock()
    code = await identities.invite(user, now=now)
    try:
        await identities.link(CONSOLE_PLATFORM, user, code, now=now)
    except LinkError:
        # Another tab of the same user linked it first; anything else is a real inconsistency.
        if await identities.user_of(CONSOLE_PLATFORM, user) != user:
            raise


async def _pump(subscriber: Subscriber, websocket: WebSocket) -> None:
    """Forward the subscriber's frames to the browser until it is dropped."""
    while True:
        frame = await subscriber.queue.get()
        await websocket.send_json(frame)
        if frame.get("type") == "closed":
            await websocket.close(code=1013, reason="fell behind; reconnect")
            return


async def _handle(gateway: ConsoleGateway, subscriber: Subscriber, user: str, raw: str) -> None:
    try:
        frame: Any = json.loads(raw)
        if not isinstance(frame, dict):
            raise ValueError("not an object")
        kind = frame.get("type")
        if kind == "text":
            reply_to = frame.get("reply_to")
            await gateway.receive_text(
                user, str(frame.get("text", "")), reply_to=int(reply_to) if reply_to is not None else None
            )
        elif kind == "button":
            await gateway.receive_button(user, int(frame["message_id"]), str(frame.get("data", "")))
        else:
            raise ValueError(f"unknown frame type {kind!r}")
    except ConsoleInputRejected as exc:
        subscriber.queue.put_nowait({"type": "notice", "text": str(exc)})
    except (ValueError, KeyError, TypeError) as exc:  # not a console message: reported, told, and the session goes on
        await gateway.unreadable_frame(user, raw, exc)
    except StorageUnavailable:
        subscriber.queue.put_nowait(
            {"type": "notice", "text": "TeleOps cannot store messages right now (database unavailable); try again"}
        )
