"""A fake Slack on loopback: the Web API (`POST /api/<method>`) and a Socket Mode WebSocket, driven by the real
slack-sdk / slack-bolt clients pointed at it with `base_url`.

It follows the public API: form or JSON bodies, `Authorization: Bearer <token>`, answers `{"ok": true, …}`
or `{"ok": false, "error": …}`; 429 carries a `Retry-After` header. `apps.connections.open` (app token)
returns a `ws://` URL of this same server; tests push envelopes with `push` and read the client's acks
from `acks`; `push_raw` sends any frame as given (a malformed envelope) and `drop_sockets` closes the sessions while
the server stays up (the client reconnects through `apps.connections.open`). Faults are programmable (429 Retry-After, 5xx, `invalid_blocks`, slow, down), and every call
is recorded with its monotonic time in `calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.telegram import free_port

__all__ = ["BOT_USER", "TEAM", "FakeSlack", "SlackCall", "SlackMessage", "sign"]

TEAM = "T1"
BOT_USER = "UBOT"


def sign(secret: str, body: bytes, timestamp: int | str) -> str:
    """Slack's v0 signature of `body` sent at `timestamp`."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SlackCall:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200
    error: str | None = None


@dataclass
class SlackMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    edits: int = 0
    history: list[str] = field(default_factory=list)
    file: tuple[str, bytes] | None = None

    def button_values(self) -> list[str]:
        return [e["value"] for b in self.blocks if b.get("type") == "actions" for e in b["elements"]]

    def block_text(self) -> str:
        """Every text the blocks show, joined (sections, context elements)."""
        parts: list[str] = []
        for block in self.blocks:
            if "text" in block:
                parts.append(str(block["text"].get("text", "")))
            for element in block.get("elements", []):
                if element.get("type") in ("mrkdwn", "plain_text"):
                    parts.append(str(element.get("text", "")))
        return "\n".join(parts)


@dataclass
class _Fault:
    method: str | None
    status: int
    error: str
    retry_after: int | None
    remaining: int


class FakeSlack:
    """`await start()`; give `base_url` to AsyncWebClient; `await stop()` closes the port (connection refused)."""

    def __init__(self, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token") -> None:  # noqa: S107
        self.bot_token = bot_token
        self.app_token = app_token
        self.port = free_port()
        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.left: list[str] = []
        self._faults: list[_Fault] = []
        self._uploads: dict[str, tuple[str, bytes]] = {}
        self._sockets: set[WebSocket] = set()
        self._socket_joined = asyncio.Event()
        self.connections = 0  # Socket Mode sessions accepted so far
        self._ts = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._app = Starlette(
            routes=[
                Route("/api/{method}", self._endpoint, methods=["POST", "GET"]),
                Route("/upload/{file_id}", self._upload, methods=["POST"]),
                WebSocketRoute("/link", self._socket),
            ]
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False
        )
        config.timeout_graceful_shutdown = 0.2  # type: ignore[assignment]  # uvicorn takes a float; annotated int
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"fake Slack did not start on port {self.port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        self._sockets.clear()
        self._socket_joined.clear()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
        self._server = None
        self._task = None

    # -- what tests program and read --------------------------------------------------------------

    def fail(
        self, method: str | None, *, status: int, error: str = "", retry_after: int | None = None, times: int = 1
    ) -> None:
        """The next `times` calls of `method` (None: any Web API method) answer `status` / `error`."""
        default = {429: "ratelimited", 400: "invalid_blocks"}.get(status, "internal_error")
        self._faults.append(_Fault(method, status, error or default, retry_after, times))

    def revoke_bot_token(self) -> str:
        """Revoke the bot token (an app reinstalled or uninstalled): Web API calls with it answer `invalid_auth`.
        Returns the old token (assign it to `bot_token` to accept it again)."""
        old, self.bot_token = self.bot_token, "xoxb-revoked"
        return old

    def calls_of(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel: str, *, thread: str | None = None) -> list[SlackMessage]:
        """Messages of `channel` in posting order; with `thread`, only the replies in that thread."""
        found = [m for (c, _), m in sorted(self.messages.items(), key=lambda kv: float(kv[0][1])) if c == channel]
        if thread is not None:
            return [m for m in found if m.thread_ts == thread]
        return [m for m in found if m.thread_ts is None]

    async def wait_for_socket(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self._socket_joined.wait(), timeout)

    async def push(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send one Socket Mode envelope (`events_api`, `interactive`, `slash_commands`); returns its id."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        await self.wait_for_socket()
        for ws in list(self._sockets):
            await ws.send_text(json.dumps(envelope))
        return envelope_id

    async def push_raw(self, frame: str) -> None:
        """Send `frame` over every open Socket Mode session exactly as given (no envelope is built around it)."""
        await self.wait_for_socket()
        for ws in list(self._sockets):
            await ws.send_text(frame)

    async def drop_sockets(self) -> None:
        """Close every Socket Mode session from the server side (as Slack does when it rotates connections or a
        network path breaks); the HTTP API keeps answering, so the client can reconnect."""
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        self._sockets.clear()
        self._socket_joined.clear()

    # -- payload builders (what Slack sends) ------------------------------------------------------

    @staticmethod
    def message_payload(
        channel: str,
        user: str,
        text: str,
        *,
        team: str = TEAM,
        thread_ts: str | None = None,
        event_id: str | None = None,
        ts: float | None = None,
        subtype: str | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        sent = f"{ts if ts is not None else time.time():.6f}"
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": sent,
            "team": team,
            "channel_type": "im" if channel.startswith("D") else "channel",
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        if subtype is not None:
            event["subtype"] = subtype
        if bot:
            event["bot_id"] = "B999"
        return {
            "token": "legacy",
            "team_id": team,
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(float(sent)),
            "event": event,
        }

    @staticmethod
    def button_payload(channel: str, user: str, message_ts: str, value: str, *, team: str = TEAM) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "team": {"id": team, "domain": "example"},
            "user": {"id": user, "username": "alice", "team_id": team},
            "api_app_id": "A1",
            "trigger_id": f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex[:8]}",
            "channel": {"id": channel, "name": "ops"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "message": {"ts": message_ts, "type": "message"},
            "actions": [
                {
                    "type": "button",
                    "action_id": f"teleops:{value.split(':', 1)[0]}",
                    "block_id": "teleops_actions",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
            "response_url": "http://127.0.0.1:9/unused",
        }

    @staticmethod
    def command_payload(channel: str, user: str, text: str, *, team: str = TEAM) -> dict[str, str]:
        return {
            "token": "legacy",
            "team_id": team,
            "team_domain": "example",
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": "alice",
            "command": "/teleops",
            "text": text,
            "api_app_id": "A1",
            "response_url": "http://127.0.0.1:9/unused",
            "trigger_id": f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex[:8]}",
        }

    @staticmethod
    def joined_payload(channel: str, user: str = BOT_USER, *, inviter: str = "U666") -> dict[str, Any]:
        return {
            "team_id": TEAM,
            "api_app_id": "A1",
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "event": {
                "type": "member_joined_channel",
                "user": user,
                "channel": channel,
                "team": TEAM,
                "inviter": inviter,
            },
        }

    # -- the Web API ------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await _params(request)
        call = SlackCall(method, params, time.monotonic())
        self.calls.append(call)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return self._error(call, 200, "invalid_auth")
        fault = self._take_fault(method)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return self._error(call, fault.status, fault.error, headers)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error(call, 200, "unknown_method")
        try:
            result = await handler(params, request)
        except _ApiError as exc:
            return self._error(call, 200, exc.error)
        return JSONResponse({"ok": True, **result})

    def _error(self, call: SlackCall, status: int, error: str, headers: dict[str, str] | None = None) -> Response:
        call.status, call.error = status, error
        return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if (fault.method is None or fault.method == method) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _m_auth_test(self, _p: dict[str, Any], _r: Request) -> dict[str, Any]:
        return {"url": "https://example.slack.test/", "team": "Example", "user": "teleops", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": "B0BOT"}  # fmt: skip

    async def _m_apps_connections_open(self, _p: dict[str, Any], _r: Request) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/link?ticket={uuid.uuid4().hex}"}

    async def _m_chat_postMessage(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        channel, text, blocks = str(p.get("channel", "")), str(p.get("text") or ""), _json(p.get("blocks")) or []
        # A user id posts to the person's DM with the app (Slack's documented shortcut; kept under the user id here).
        if not channel.startswith(("C", "G", "D", "U", "W")):
            raise _ApiError("channel_not_found")
        if not text.strip() and not blocks:
            raise _ApiError("no_text")
        _check_blocks(blocks)
        thread = p.get("thread_ts") or None
        if thread is not None and (channel, str(thread)) not in self.messages:
            raise _ApiError("thread_not_found")
        stored = SlackMessage(channel, self._new_ts(), text, blocks, str(thread) if thread else None)
        stored.history.append(text)
        self.messages[(channel, stored.ts)] = stored
        return {"channel": channel, "ts": stored.ts, "message": {"text": text, "ts": stored.ts, "blocks": blocks}}

    async def _m_chat_update(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        stored = self.messages.get((str(p.get("channel")), str(p.get("ts"))))
        if stored is None:
            raise _ApiError("message_not_found")
        blocks = _json(p.get("blocks")) or []
        _check_blocks(blocks)
        stored.text, stored.blocks = str(p.get("text") or ""), blocks
        stored.edits += 1
        stored.history.append(stored.text)
        return {"channel": stored.channel, "ts": stored.ts, "text": stored.text}

    async def _m_chat_postEphemeral(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        return {"message_ts": self._new_ts()}

    async def _m_conversations_leave(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        self.left.append(str(p.get("channel")))
        return {}

    async def _m_files_getUploadURLExternal(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        file_id = f"F{uuid.uuid4().hex[:9].upper()}"
        self._uploads[file_id] = (str(p.get("filename")), b"")
        return {"upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if file_id not in self._uploads:
            return PlainTextResponse("no such upload", status_code=404)
        form = await request.form()
        data = b""
        for _key, value in form.multi_items():
            if hasattr(value, "read"):
                data = await value.read()
        if not data:
            data = await request.body()
        self._uploads[file_id] = (self._uploads[file_id][0], data)
        self.calls.append(SlackCall("upload", {"file_id": file_id, "bytes": len(data)}, time.monotonic()))
        return PlainTextResponse("OK - " + str(len(data)))

    async def _m_files_completeUploadExternal(self, p: dict[str, Any], _r: Request) -> dict[str, Any]:
        files = _json(p.get("files")) or []
        channel = str(p.get("channel_id") or "")
        thread = str(p.get("thread_ts")) if p.get("thread_ts") else None
        shared = []
        for item in files:
            name, data = self._uploads.pop(item["id"])
            stored = SlackMessage(channel, self._new_ts(), str(p.get("initial_comment") or ""), [], thread)
            stored.file = (name, data)
            self.messages[(channel, stored.ts)] = stored
            shared.append({"id": item["id"], "name": name, "title": item.get("title"), "size": len(data),
                           "shares": {"public": {channel: [{"ts": stored.ts, "thread_ts": thread}]}}})  # fmt: skip
        return {"files": shared}

    # -- Socket Mode ------------------------------------------------------------------------------

    async def _socket(self, ws: WebSocket) -> None:
        await ws.accept()
        self._sockets.add(ws)
        self.connections += 1
        await ws.send_text(json.dumps({"type": "hello", "num_connections": len(self._sockets),
                                       "connection_info": {"app_id": "A1"}}))  # fmt: skip
        self._socket_joined.set()
        try:
            while True:
                ack = json.loads(await ws.receive_text())
                if "envelope_id" in ack:
                    self.acks[str(ack["envelope_id"])] = ack
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.discard(ws)
            if not self._sockets:
                self._socket_joined.clear()


class _ApiError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


_BLOCK_TYPES = {"section", "context", "actions", "divider", "header", "rich_text", "image"}


def _check_blocks(blocks: list[dict[str, Any]]) -> None:
    """The Block Kit rules our messages could break: known types, ≤50 blocks, section text ≤3000."""
    if len(blocks) > 50:
        raise _ApiError("invalid_blocks")
    for block in blocks:
        if block.get("type") not in _BLOCK_TYPES:
            raise _ApiError("invalid_blocks")
        if block.get("type") == "section" and len(str(block.get("text", {}).get("text", ""))) > 3000:
            raise _ApiError("invalid_blocks")


def _json(value: Any) -> Any:
    if value is None or value == "":
        return None
    return json.loads(value) if isinstance(value, str) else value


async def _params(request: Request) -> dict[str, Any]:
    # slack-sdk sends some methods' arguments in the query string (`params`), others as a form or JSON body.
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = await request.body()
        params.update(json.loads(body) if body else {})
    elif content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        params.update({k: v for k, v in form.multi_items() if not hasattr(v, "read")})
    return params
