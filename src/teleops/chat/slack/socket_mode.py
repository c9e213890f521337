"""Socket Mode for the Slack gateway: slack-sdk's WebSocket client and Bolt's dispatch, with nothing left unconfirmed.

slack-sdk alone logs a frame it cannot read and moves on, and Bolt answers a payload no listener matches with a
404 that is never acknowledged, so Slack redelivers it. Here every frame is checked against the documented
envelope before the SDK queues it: a malformed one is acknowledged when it names an envelope id (so Slack does
not send it again) and reported to the gateway's `InputWatch`; a well-formed envelope of a kind nothing handles,
or one Bolt fails on, is acknowledged and reported too. Every frame that arrives counts as a successful receive
cycle. Reconnecting after a dropped socket stays the SDK's job (its session monitor), as before.

Several replicas (issue #23): the session is a singleton, and `fence` is asked before each envelope is handled. An
envelope that arrives at a replica no longer holding the lease (one frozen and resumed after another took over) is
neither handled nor acknowledged: Slack redelivers it, to the holder's session.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from time import time

import structlog
from slack_bolt.adapter.socket_mode.async_base_handler import AsyncBaseSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app, send_async_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.socket_mode.websockets import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

from teleops.chat.input_watch import InputWatch, UnhandledReason
from teleops.chat.slack.events import delivery_id

log = structlog.get_logger(__name__)

__all__ = ["PING_INTERVAL_S", "SocketModeHandler", "envelope_problem"]

PING_INTERVAL_S = 10.0  # slack-sdk's default: WebSocket pings, and how soon a dropped session is noticed
_CONTROL_FRAMES = {"hello", "disconnect"}  # carry no envelope: the SDK acts on them itself


def envelope_problem(raw: str) -> tuple[str, str | None]:
    """Check one Socket Mode frame against the documented envelope.

    Returns (its envelope id or "", what is wrong with it or None when it is a well-formed envelope or a
    control frame). Pure; never raises.
    """
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        return "", f"not JSON ({exc})"
    if not isinstance(frame, dict):
        return "", f"a JSON {type(frame).__name__}, not an object"
    kind = frame.get("type")
    if kind in _CONTROL_FRAMES:
        return "", None
    envelope_id = frame.get("envelope_id")
    named = envelope_id if isinstance(envelope_id, str) else ""
    if not named:
        return "", "no envelope_id"
    if not isinstance(kind, str) or not kind:
        return named, "no type"
    if not isinstance(frame.get("payload"), dict):
        return named, "payload is not a JSON object"
    return named, None


class _CheckingClient(SocketModeClient):
    """slack-sdk's websockets client, checking each frame before it is queued for the listeners."""

    def __init__(self, app_token: str, *, web_client: AsyncWebClient, watch: InputWatch, app: AsyncApp) -> None:
        super().__init__(app_token=app_token, logger=app.logger, web_client=web_client, ping_interval=PING_INTERVAL_S)
        self._watch = watch

    async def enqueue_message(self, message: str) -> None:
        self._watch.received()  # a frame arrived: the session is alive
        envelope_id, problem = envelope_problem(message)
        if problem is None:
            await super().enqueue_message(message)
            return
        if envelope_id:
            # Confirmed so that Slack does not redeliver what can never be read.
            await self.send_socket_mode_response(SocketModeResponse(envelope_id=envelope_id))
        await self._watch.unhandled(
            update_id=envelope_id, reason=UnhandledReason.MALFORMED_ENVELOPE, error=problem, raw=message
        )


class SocketModeHandler(AsyncBaseSocketModeHandler):
    """Bolt's Socket Mode adapter (as `AsyncSocketModeHandler`), reporting what it cannot handle to `watch`."""

    app: AsyncApp
    client: _CheckingClient

    def __init__(
        self,
        app: AsyncApp,
        app_token: str,
        *,
        web_client: AsyncWebClient,
        watch: InputWatch,
        fence: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.app = app
        self.app_token = app_token
        self._watch = watch
        self._fence = fence
        self.client = _CheckingClient(app_token, web_client=web_client, watch=watch, app=app)
        self.client.socket_mode_request_listeners.append(self.handle)

    async def handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        started = time()
        if self._fence is not None and not await self._fence():
            log.warning("slack.envelope_not_ours", envelope_id=req.envelope_id, hint="left for the lease holder")
            return
        response: BoltResponse = await run_async_bolt_app(self.app, req)
        if response.status == 404:
            # No listener for this kind: Bolt would leave it unacknowledged and Slack would send it again.
            await self._watch.unhandled(
                update_id=delivery_id(req.payload) or req.envelope_id,
                reason=UnhandledReason.UNKNOWN_KIND,
                error=f"no handler for a {req.type} envelope",
                raw=req.payload,
            )
            response = BoltResponse(status=200, body="")
        elif response.status >= 500:
            # Bolt itself failed on it (its matchers read the payload before any listener of ours runs): a
            # redelivery would fail the same way, so it is confirmed too.
            await self._watch.unhandled(
                update_id=delivery_id(req.payload) or req.envelope_id,
                reason=UnhandledReason.UNPARSEABLE,
                error=f"slack-bolt failed on this {req.type} envelope ({response.status}); see the slack_bolt log",
                raw=req.payload,
            )
            response = BoltResponse(status=200, body="")
        await send_async_response(client, req, response, started)
