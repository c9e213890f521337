"""A fake Telegram Bot API server on loopback, spoken to by the real python-telegram-bot client.

It follows the public Bot API: `POST /bot<token>/<method>` with form-encoded, multipart or JSON
bodies, answers `{"ok": true, "result": …}` or `{"ok": false, "error_code", "description",
"parameters": {"retry_after"}}`. Tests feed updates with `push_update` (served by long-polling
`getUpdates`; `push_raw` queues any JSON exactly as given, as a server with another idea of an update's shape
would send it), program faults (429, 5xx, slow answers, "can't parse entities", connection refused
for a while), and read every call with its monotonic time from `calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["Call", "FakeTelegram", "free_port"]

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "TeleOps", "username": "teleops_test_bot"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the request arrived
    status: int = 200


@dataclass
class _Fault:
    method: str | None
    status: int
    description: str
    retry_after: int | None = None
    remaining: int = 1
    delay_s: float = 0.0
    migrate_to_chat_id: int | None = None


@dataclass
class StoredMessage:
    chat_id: int
    message_id: int
    text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    reply_to: int | None
    document: str | None = None
    document_bytes: bytes = b""
    edits: int = 0
    history: list[str] = field(default_factory=list)


class FakeTelegram:
    """Start with `await start()`; `base_url` goes to PTB as `base_url`. Stop with `await stop()`."""

    def __init__(self, token: str = "123456:TEST-token") -> None:  # noqa: S107 - a fake bot token
        self.token = token
        self.port = free_port()
        self.calls: list[Call] = []
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self._next_message_id: dict[int, int] = {}
        self._updates: list[tuple[int, Any]] = []  # (update_id used for `offset`, the JSON served)
        self._next_update_id = 1000
        self._update_arrived = asyncio.Event()
        self._faults: list[_Fault] = []
        self.reject_parse_modes: set[str] = set()
        # method -> seconds a successful call waits *after* it took effect, before answering (an accepted message
        # whose answer is late: the window in which a sender that dies has posted without knowing it).
        self.answer_delay_s: dict[str, float] = {}
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._app = Starlette(routes=[Route("/bot{token}/{method}", self._endpoint, methods=["POST", "GET"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

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
                raise RuntimeError(f"fake Telegram did not start on port {self.port}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Close the listening socket: clients get connection refused until `start` again (same port)."""
        self._stopping = True
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._update_arrived.set()  # release long polls
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
        self._server = None
        self._task = None
        self._stopping = False

    # -- what tests feed and program --------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update (without `update_id`, one is assigned and returned) for getUpdates."""
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
            self._next_update_id += 1
        self._updates.append((int(update["update_id"]), update))
        self._update_arrived.set()
        return int(update["update_id"])

    def push_raw(self, update: Any) -> int:
        """Queue `update` for getUpdates byte for byte as given (any JSON: an object in a shape PTB does not know,
        a string, a list…). Its position in the queue gets the next update id, which `offset` confirms; when
        `update` is an object with an integer `update_id`, that one is used instead."""
        given = update.get("update_id") if isinstance(update, dict) else None
        if isinstance(given, int) and not isinstance(given, bool):
            update_id = given
            self._next_update_id = max(self._next_update_id, given + 1)
        else:
            update_id = self._next_update_id
            self._next_update_id += 1
        self._updates.append((update_id, update))
        self._update_arrived.set()
        return update_id

    def next_update_id(self) -> int:
        """The id `push_update` gives the next update pushed without one."""
        return self._next_update_id

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates `offset` past them."""
        return len(self._updates)

    def fail(
        self,
        method: str | None,
        *,
        status: int,
        description: str = "",
        retry_after: int | None = None,
        times: int = 1,
        delay_s: float = 0.0,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        """The next `times` calls of `method` (None: any method except getUpdates) answer `status`
        (`migrate_to_chat_id`: the group became that supergroup, as Telegram's `parameters` say)."""
        self._faults.append(_Fault(method, status, description or _PHRASES.get(status, "error"), retry_after, times))
        self._faults[-1].migrate_to_chat_id = migrate_to_chat_id
        if delay_s:
            self._faults[-1].delay_s = delay_s

    def revoke_token(self) -> str:
        """Revoke the bot token as BotFather's /revoke does: calls with it answer 401 Unauthorized from now on.
        Returns the old token (assign it to `token` to accept it again)."""
        old, self.token = self.token, self.token.split(":", 1)[0] + ":revoked"
        return old

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def chat_messages(self, chat_id: int) -> list[StoredMessage]:
        return [m for (c, _), m in sorted(self.messages.items()) if c == chat_id]

    # -- update builders (what Telegram would send) -----------------------------------------------

    @staticmethod
    def user(user_id: int, username: str = "alice", *, is_bot: bool = False) -> dict[str, Any]:
        return {"id": user_id, "is_bot": is_bot, "first_name": username.title(), "username": username}

    @staticmethod
    def chat(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup", "title": "ops"}

    def message_update(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        username: str = "alice",
        date: int | None = None,
        reply_to: int | None = None,
        forwarded: bool = False,
        edited: bool = False,
        sender_chat: int | None = None,
        is_bot: bool = False,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id),
            "date": date if date is not None else int(time.time()),
            "chat": self.chat(chat_id),
            "from": self.user(user_id, username, is_bot=is_bot),
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        if reply_to is not None:
            original = self.messages.get((chat_id, reply_to))
            message["reply_to_message"] = {
                "message_id": reply_to,
                "date": int(time.time()),
                "chat": self.chat(chat_id),
                "from": BOT_USER,
                "text": original.text if original else "",
            }
        if forwarded:
            message["forward_origin"] = {"type": "user", "date": int(time.time()) - 60, "sender_user": self.user(1)}
        if sender_chat is not None:
            message["sender_chat"] = {"id": sender_chat, "type": "supergroup", "title": "anon"}
        if edited:
            message["edit_date"] = int(time.time())
            return {"edited_message": message}
        return {"message": message}

    def button_update(
        self, chat_id: int, user_id: int, message_id: int, data: str, *, username: str = "alice"
    ) -> dict[str, Any]:
        original = self.messages.get((chat_id, message_id))
        return {
            "callback_query": {
                "id": f"cb{self._next_update_id}",
                "from": self.user(user_id, username),
                "chat_instance": "1",
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": self.chat(chat_id),
                    "from": BOT_USER,
                    "text": original.text if original else "",
                },
            }
        }

    def added_to_chat_update(self, chat_id: int, by_user: int) -> dict[str, Any]:
        return {
            "my_chat_member": {
                "chat": self.chat(chat_id),
                "from": self.user(by_user, "mallory"),
                "date": int(time.time()),
                "old_chat_member": {"status": "left", "user": BOT_USER},
                "new_chat_member": {"status": "member", "user": BOT_USER},
            }
        }

    # -- the HTTP side ----------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        method = request.path_params["method"]
        params = await _params(request)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        if request.path_params["token"] != self.token:
            call.status = 401
            return _error(401, "Unauthorized")
        fault = self._take_fault(method)
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            call.status = fault.status
            return _error(fault.status, fault.description, fault.retry_after, fault.migrate_to_chat_id)
        handler = _METHODS.get(method)
        if handler is None:
            call.status = 404
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(self, params)
        except _ApiError as exc:
            call.status = exc.status
            return _error(exc.status, exc.description)
        if self.answer_delay_s.get(method):
            await asyncio.sleep(self.answer_delay_s[method])
        return JSONResponse({"ok": True, "result": result})

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            applies = fault.method == method if fault.method is not None else method != "getUpdates"
            if applies and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _new_message_id(self, chat_id: int) -> int:
        value = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = value + 1
        return value

    def _check_markup(self, text: str, parse_mode: str | None) -> None:
        if parse_mode and parse_mode.upper() in {m.upper() for m in self.reject_parse_modes}:
            raise _ApiError(400, 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0')
        if parse_mode and parse_mode.upper() == "HTML":
            _check_html(text)

    def _message_json(self, stored: StoredMessage) -> dict[str, Any]:
        result: dict[str, Any] = {
            "message_id": stored.message_id,
            "date": int(time.time()),
            "chat": self.chat(stored.chat_id),
            "from": BOT_USER,
        }
        if stored.document is not None:
            result["document"] = {
                "file_id": f"f{stored.message_id}",
                "file_unique_id": "u",
                "file_name": stored.document,
            }
            if stored.text:
                result["caption"] = stored.text
        else:
            result["text"] = stored.text
        if stored.reply_markup:
            result["reply_markup"] = stored.reply_markup
        return result

    async def _get_updates(self, params: dict[str, Any]) -> list[Any]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        if offset:
            self._updates = [(i, u) for i, u in self._updates if i >= offset]
        deadline = time.monotonic() + timeout
        while not self._updates and time.monotonic() < deadline and not self._stopping:
            self._update_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._update_arrived.wait(), timeout=max(deadline - time.monotonic(), 0.01))
        return [u for _, u in self._updates[:100]]

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096 and not params.get("parse_mode"):
            raise _ApiError(400, "Bad Request: message is too long")
        self._check_markup(text, params.get("parse_mode"))
        stored = StoredMessage(
            chat_id,
            self._new_message_id(chat_id),
            text,
            params.get("parse_mode"),
            _json_field(params.get("reply_markup")),
            _reply_to(params),
        )
        stored.history.append(text)
        self.messages[(chat_id, stored.message_id)] = stored
        return self._message_json(stored)

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        key = (int(params["chat_id"]), int(params["message_id"]))
        stored = self.messages.get(key)
        if stored is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        text = str(params.get("text", ""))
        self._check_markup(text, params.get("parse_mode"))
        markup = _json_field(params.get("reply_markup"))
        if text == stored.text and markup == stored.reply_markup:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup are exactly the same",
            )
        stored.text, stored.parse_mode, stored.reply_markup = text, params.get("parse_mode"), markup
        stored.edits += 1
        stored.history.append(text)
        return self._message_json(stored)

    async def _send_document(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        document = params.get("document")
        if not isinstance(document, tuple):
            raise _ApiError(400, "Bad Request: there is no document in the request")
        caption = str(params.get("caption") or "")
        self._check_markup(caption, params.get("parse_mode"))
        stored = StoredMessage(
            chat_id, self._new_message_id(chat_id), caption, params.get("parse_mode"), None, _reply_to(params)
        )
        stored.document, stored.document_bytes = document
        self.messages[(chat_id, stored.message_id)] = stored
        return self._message_json(stored)

    async def _true(self, _params: dict[str, Any]) -> bool:
        return True

    async def _get_me(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {
            **BOT_USER,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


_PHRASES = {
    429: "Too Many Requests: retry later",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

_METHODS: dict[str, Callable[[FakeTelegram, dict[str, Any]], Any]] = {
    "getMe": FakeTelegram._get_me,
    "getUpdates": FakeTelegram._get_updates,
    "sendMessage": FakeTelegram._send_message,
    "editMessageText": FakeTelegram._edit_message_text,
    "sendDocument": FakeTelegram._send_document,
    "answerCallbackQuery": FakeTelegram._true,
    "setMyCommands": FakeTelegram._true,
    "deleteWebhook": FakeTelegram._true,
    "setWebhook": FakeTelegram._true,
    "leaveChat": FakeTelegram._true,
}


def _error(
    status: int, description: str, retry_after: int | None = None, migrate_to_chat_id: int | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    if migrate_to_chat_id is not None:
        body["parameters"] = {"migrate_to_chat_id": migrate_to_chat_id}
    return JSONResponse(body, status_code=status)


async def _params(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = await request.body()
        return dict(json.loads(body)) if body else {}
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        params: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                params[key] = (value.filename or "file", await value.read())
            else:
                params[key] = value
        return params
    return dict(request.query_params)


def _json_field(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    return dict(json.loads(value))


def _reply_to(params: dict[str, Any]) -> int | None:
    if params.get("reply_to_message_id"):
        return int(params["reply_to_message_id"])
    reply = _json_field(params.get("reply_parameters"))
    return int(reply["message_id"]) if reply else None


_HTML_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "code",
    "pre",
    "a",
    "tg-spoiler",
    "blockquote",
    "span",
}


def _check_html(text: str) -> None:
    """Telegram's HTML rule: only known tags, properly nested, and `<`/`&` escaped elsewhere."""
    stack: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "<":
            end = text.find(">", i)
            if end < 0:
                raise _ApiError(400, f"Bad Request: can't parse entities: unclosed start tag at byte offset {i}")
            tag = text[i + 1 : end].strip()
            closing = tag.startswith("/")
            name = tag.lstrip("/").split(" ", 1)[0].lower()
            if name not in _HTML_TAGS:
                raise _ApiError(
                    400, f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" at byte offset {i}'
                )
            if closing:
                if not stack or stack.pop() != name:
                    raise _ApiError(400, f"Bad Request: can't parse entities: unexpected end tag at byte offset {i}")
            else:
                stack.append(name)
            i = end + 1
            continue
        if char == "&":
            end = text.find(";", i)
            if end < 0 or end - i > 10:
                raise _ApiError(400, f"Bad Request: can't parse entities: unescaped & at byte offset {i}")
        i += 1
    if stack:
        raise _ApiError(
            400, f"Bad Request: can't parse entities: can't find end tag corresponding to start tag {stack[-1]}"
        )
