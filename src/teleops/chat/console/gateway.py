"""The web console as a Gateway: messages are rows in `console_messages`, pushed to every open browser.

A "send" from the outbox is an insert plus a push; an "edit" is an update plus a push. What a person
types (or a button they press) becomes an `InboundEvent` for the same conversation pipeline every
platform feeds. The console has one shared room (chat id "console"); the user id is the login name,
which is immutable for the console because the login *is* the identity.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from teleops.chat.access import CODE_PROMPT
from teleops.chat.base import (
    Capabilities,
    DeliveryRefused,
    EventHandler,
    EventKind,
    Formatting,
    InboundEvent,
    RateLimits,
    RetryLater,
)
from teleops.chat.input_watch import InputWatch, UnhandledReason
from teleops.chat.render import Rendered
from teleops.domain.text import visible
from teleops.store.console_messages import ConsoleMessageRecord, ConsoleMessageStore
from teleops.store.database import StorageUnavailable

__all__ = [
    "CONSOLE_CAPABILITIES",
    "CONSOLE_CHAT_ID",
    "CONSOLE_PLATFORM",
    "ConsoleGateway",
    "ConsoleInputRejected",
    "Subscriber",
]

log = structlog.get_logger(__name__)

CONSOLE_PLATFORM = "console"
CONSOLE_CHAT_ID = "console"
MAX_TYPED_CHARS = 4000
MAX_FILE_BYTES = 1024 * 1024
_QUEUE_DEPTH = 500
LOCAL_NOTE = "served by this process: its input cannot stall apart from the controller itself"

CONSOLE_CAPABILITIES = Capabilities(
    platform=CONSOLE_PLATFORM,
    formatting=Formatting.PLAIN,  # the browser shows text with textContent: no markup, nothing to escape wrong
    max_message_length=16_000,
    buttons=True,
    max_button_data_bytes=256,
    replies=True,
    edits=True,
    files=True,
    max_file_bytes=MAX_FILE_BYTES,
    # No remote API to protect: only the edit coalescing matters (same ≤ 1 edit/s as the other platforms).
    rate_limits=RateLimits(
        per_chat_interval_s=0.0,
        per_group_per_minute=None,
        group_chat_prefix="",
        global_per_second=1000.0,
        edit_interval_s=1.0,
    ),
    local=True,
)


class ConsoleInputRejected(ValueError):
    """What a browser sent cannot be accepted; the message says why and what to do (shown to that person)."""


@dataclass(eq=False)
class Subscriber:
    """One open browser tab: frames to push, in order. `closed` is set when it fell too far behind."""

    user: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(_QUEUE_DEPTH))
    closed: bool = False


def reply_meaning(record: ConsoleMessageRecord) -> str | None:
    """What a reply to this message does (chat/conversation.py `_reply`), so the browser offers "reply" only where
    it does something and says what: "code" (a one-time-code prompt: the reply is the code), "incident" (a message
    about an incident, also a command's result on one: the reply runs on that incident's host), or None (a reply
    to anything else runs nothing)."""
    if record.author is not None:
        return None
    if str(record.body.get("text", "")).startswith(CODE_PROMPT):
        return "code"
    return "incident" if record.incident_id is not None else None


def message_view(record: ConsoleMessageRecord) -> dict[str, Any]:
    """A stored message as the browser receives it (JSON; the script renders every field as text)."""
    body = record.body
    view: dict[str, Any] = {
        "id": record.id,
        "at": record.created_at.isoformat(),
        "edited": record.updated_at != record.created_at,
        "author": record.author,
        "reply_to": record.reply_to,
        "incident_id": record.incident_id,
        "reply": reply_meaning(record),
        # What people typed is shown with control/bidi characters escaped too (THREATS T25).
        "text": visible(str(body.get("text", ""))),
        "buttons": [{"label": str(label), "data": str(data)} for label, data in body.get("buttons", [])],
    }
    if "file" in body:
        view["file"] = body["file"]
    return view


class ConsoleGateway:
    """Implements `teleops.chat.base.Gateway` for the web console (platform "console")."""

    def __init__(self, store: ConsoleMessageStore, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._on_event: EventHandler | None = None
        self._subscribers: set[Subscriber] = set()
        self._callbacks: dict[str, str] = {}  # button callback id -> the user who pressed
        self._input = InputWatch(CONSOLE_PLATFORM, clock=clock, mode="local", watched=False, note=LOCAL_NOTE)

    @property
    def capabilities(self) -> Capabilities:
        return CONSOLE_CAPABILITIES

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    async def start(self, on_event: EventHandler) -> None:
        self._on_event = on_event
        self._input.started()

    async def stop(self) -> None:
        self._on_event = None
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    # -- outbound (called by the outbox worker) -------------------------------------------------

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        _check_chat(chat_id)
        record = await self._append(_body(message), reply_to=_optional_id(reply_to), incident_id=message.incident_id)
        self._publish({"type": "message", "message": message_view(record)})
        return str(record.id)

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        _check_chat(chat_id)
        target = _optional_id(message_id)
        if target is None:
            raise DeliveryRefused(f"console message id {message_id!r} is not a number")
        try:
            record = await self._store.replace_body(target, _body(message), now=self._clock())
        except StorageUnavailable as exc:
            raise RetryLater(f"console storage unavailable: {exc}") from exc
        if record is None:
            raise DeliveryRefused(f"console message {message_id} does not exist")
        self._publish({"type": "edit", "message": message_view(record)})

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        _check_chat(chat_id)
        if len(content) > MAX_FILE_BYTES:
            raise DeliveryRefused(f"file {filename!r} is {len(content)} bytes; the console takes {MAX_FILE_BYTES}")
        body: dict[str, Any] = _body(caption) if caption is not None else {"text": "", "buttons": []}
        body["file"] = {
            "name": visible(filename)[:255],
            "bytes": len(content),
            # Control, ANSI and bidi characters shown as visible escapes (THREATS T25), like every message.
            "text": visible(content.decode("utf-8", errors="replace")),
        }
        incident_id = caption.incident_id if caption is not None else None
        record = await self._append(body, reply_to=_optional_id(reply_to), incident_id=incident_id)
        self._publish({"type": "message", "message": message_view(record)})
        return str(record.id)

    async def answer_button(self, callback_id: str, text: str) -> None:
        user = self._callbacks.pop(callback_id, None)
        if user is None:
            return  # best effort: the tab that pressed may be gone
        for subscriber in list(self._subscribers):
            if subscriber.user == user:
                self._push(subscriber, {"type": "notice", "text": visible(text)[:500]})

    async def leave(self, chat_id: str) -> bool:
        return False  # the console is one chat, always configured

    async def probe(self) -> str | None:
        return None  # served by this process: reachable whenever the self-test runs

    # -- browsers --------------------------------------------------------------------------------

    def subscribe(self, user: str) -> Subscriber:
        subscriber = Subscriber(user)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    @property
    def connected(self) -> int:
        return len(self._subscribers)

    async def history(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """The newest messages, oldest first, as the browser receives them."""
        return [message_view(record) for record in await self._store.recent(limit=limit)]

    async def receive_text(self, user: str, text: str, *, reply_to: int | None = None) -> None:
        """Someone typed `text` (optionally as a reply to message `reply_to`): show it, then hand it on.

        Raises ConsoleInputRejected for empty or oversized text or a reply to a message that does not exist.
        """
        text = text.strip()
        if not text:
            raise ConsoleInputRejected("empty message; type a command such as `df -h`, or /help")
        if len(text) > MAX_TYPED_CHARS:
            raise ConsoleInputRejected(f"message too long ({len(text)} characters, at most {MAX_TYPED_CHARS})")
        if reply_to is not None and await self._store.get(reply_to) is None:
            raise ConsoleInputRejected(f"message #{reply_to} does not exist; reload the page and reply again")
        record = await self._append({"text": text, "buttons": []}, author=user, reply_to=reply_to)
        self._publish({"type": "message", "message": message_view(record)})
        await self._dispatch(
            InboundEvent(
                platform=CONSOLE_PLATFORM,
                kind=EventKind.MESSAGE,
                chat_id=CONSOLE_CHAT_ID,
                user_id=user,
                username=user,
                text=text,
                sent_at=record.created_at,
                update_id=f"console-message-{record.id}",
                message_id=str(record.id),
                reply_to=None if reply_to is None else str(reply_to),
            ),
            user,
        )

    async def receive_button(self, user: str, message_id: int, data: str) -> None:
        """Someone pressed a button. Only data that the message really carries is accepted.

        Raises ConsoleInputRejected when the message or the button does not exist.
        """
        record = await self._store.get(message_id)
        if record is None or all(str(d) != data for _, d in record.body.get("buttons", [])):
            raise ConsoleInputRejected("that button is no longer there; reload the page")
        callback_id = secrets.token_urlsafe(12)
        self._callbacks[callback_id] = user
        if len(self._callbacks) > 10_000:  # unanswered presses: forget the oldest
            for key in list(self._callbacks)[:5_000]:
                del self._callbacks[key]
        await self._dispatch(
            InboundEvent(
                platform=CONSOLE_PLATFORM,
                kind=EventKind.BUTTON,
                chat_id=CONSOLE_CHAT_ID,
                user_id=user,
                username=user,
                text="",
                sent_at=self._clock(),
                update_id=f"console-button-{callback_id}",
                message_id=str(message_id),
                button_data=data,
                callback_id=callback_id,
            ),
            user,
        )

    async def unreadable_frame(self, user: str, raw: str, error: BaseException | str) -> None:
        """A browser of `user` sent a frame that is not a console message: reported (logged, audited, counted) and
        told to that browser; the session goes on."""
        await self._input.unhandled(
            update_id=f"console-frame-from-{user}", reason=UnhandledReason.MALFORMED_ENVELOPE, error=error, raw=raw
        )
        self._notice(user, "the page sent something unexpected and it was ignored; reload the page")

    # -- internals -------------------------------------------------------------------------------

    async def _dispatch(self, event: InboundEvent, user: str) -> None:
        handler = self._on_event
        if handler is None:
            self._notice(user, "TeleOps is not handling chat commands right now (the console gateway is stopped).")
            return
        try:
            await handler(event)
        except Exception as exc:  # the handler promises not to raise; if it does, this message is skipped, not the tab
            await self._input.unhandled(
                update_id=event.update_id, reason=UnhandledReason.HANDLER_FAILED, error=exc, raw=event.text
            )
            self._notice(
                user,
                f"That failed inside TeleOps and nothing was run ({event.update_id}). Try again; if it keeps "
                "failing, an admin finds the error in the TeleOps log under that id.",
            )

    async def _append(
        self,
        body: dict[str, Any],
        *,
        author: str | None = None,
        reply_to: int | None = None,
        incident_id: int | None = None,
    ) -> ConsoleMessageRecord:
        try:
            return await self._store.append(
                body, now=self._clock(), author=author, reply_to=reply_to, incident_id=incident_id
            )
        except StorageUnavailable as exc:
            raise RetryLater(f"console storage unavailable: {exc}") from exc

    def _notice(self, user: str, text: str) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.user == user:
                self._push(subscriber, {"type": "notice", "text": text})

    def _publish(self, frame: dict[str, Any]) -> None:
        for subscriber in list(self._subscribers):
            self._push(subscriber, frame)

    def _push(self, subscriber: Subscriber, frame: dict[str, Any]) -> None:
        try:
            subscriber.queue.put_nowait(frame)
        except asyncio.QueueFull:
            # A tab that stopped reading must not hold memory or slow the others: it is dropped and
            # reloads the whole history when it reconnects.
            log.warning("console.subscriber_dropped", user=subscriber.user)
            self._drop(subscriber)

    def _drop(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        self._subscribers.discard(subscriber)
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait({"type": "closed"})


def _check_chat(chat_id: str) -> None:
    if chat_id != CONSOLE_CHAT_ID:
        raise DeliveryRefused(f"the console has one chat, {CONSOLE_CHAT_ID!r}; got {chat_id!r}")


def _optional_id(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def _body(message: Rendered) -> dict[str, Any]:
    # Formatting is PLAIN for the console; `plain` is also correct for any other formatting handed over.
    return {"text": message.plain, "buttons": [[b.label, b.data] for b in message.buttons]}
