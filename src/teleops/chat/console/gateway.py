"""The web console as a Gateway: messages are rows in `console_messages`, pushed to every open browser.

A "send" from the outbox is an insert plus a push; an "edit" is an update plus a push. What a person
types (or a button they press) becomes an `InboundEvent` for the same conversation pipeline every
platform feeds. The console has one shared room (chat id "console"); the user id is the login name,
which is immutable for the console because the login *is* the identity.

With several replicas, each replica's browsers also get what the others wrote: the store NOTIFYs every write and
this gateway, hearing another replica's, reads the message and pushes it as if it had written it (`_elsewhere`).

The room is shared, but a command's line and output are not: every message is decided per reader, live (when
it is pushed to a tab, with the role its user holds then) and in the history, by the read rule
(chat/console/read_rule.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from teleops.chat.base import (
    Capabilities,
    DeliveryRefused,
    EventHandler,
    EventKind,
    Formatting,
    InboundEvent,
    RateLimits,
    Rendered,
    RetryLater,
)
from teleops.chat.console.read_rule import COMMAND_KEY, RUNS_KEY, SOURCE_KEY, ConsoleReaders, command_of
from teleops.chat.console.views import asks_for_command, message_view, reply_meaning, view_for
from teleops.chat.input_watch import InputWatch, UnhandledReason
from teleops.domain.text import visible
from teleops.store.console_messages import ConsoleChange, ConsoleMessageRecord, ConsoleMessageStore
from teleops.store.database import StorageUnavailable
from teleops.store.wakeups import Listener

__all__ = [
    "CONSOLE_CAPABILITIES",
    "CONSOLE_CHAT_ID",
    "CONSOLE_PLATFORM",
    "ConsoleGateway",
    "ConsoleInputRejected",
    "Subscriber",
    "message_view",
    "reply_meaning",
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
)


class ConsoleInputRejected(ValueError):
    """What a browser sent cannot be accepted; the message says why and what to do (shown to that person)."""


@dataclass(eq=False)
class Subscriber:
    """One open browser tab: frames to push, in order. `closed` is set when it fell too far behind."""

    user: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(_QUEUE_DEPTH))
    closed: bool = False


class ConsoleGateway:
    """Implements `teleops.chat.base.Gateway` for the web console (platform "console")."""

    def __init__(self, store: ConsoleMessageStore, *, clock: Callable[[], datetime], readers: ConsoleReaders) -> None:
        self._store = store
        self._clock = clock
        self._readers = readers
        self._publishing = asyncio.Lock()
        self._on_event: EventHandler | None = None
        self._subscribers: set[Subscriber] = set()
        self._callbacks: dict[str, str] = {}  # button callback id -> the user who pressed
        self._input = InputWatch(CONSOLE_PLATFORM, clock=clock, mode="local", watched=False, note=LOCAL_NOTE)
        self._listener: Listener | None = None
        self._pushes: set[asyncio.Task[None]] = set()  # other replicas' writes being pushed here

    @property
    def capabilities(self) -> Capabilities:
        return CONSOLE_CAPABILITIES

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    async def start(self, on_event: EventHandler) -> None:
        self._on_event = on_event
        self._input.started()
        self._listener = self._store.listen(self._elsewhere)
        if self._listener is not None:
            self._listener.start()

    async def stop(self) -> None:
        self._on_event = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        for push in list(self._pushes):
            push.cancel()
        for subscriber in list(self._subscribers):
            self._drop(subscriber)

    # -- outbound (called by the outbox worker) -------------------------------------------------

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        _check_chat(chat_id)
        answered = _optional_id(reply_to)
        record = await self._append(_body(message), reply_to=answered, incident_id=message.incident_id)
        if message.command_id is not None and answered is not None:
            await self._tag_asking_line(answered, message.command_id)  # first: the room sees the line, then its result
        await self._publish("message", record)
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
        await self._publish("edit", record)

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
            # Control, ANSI and bidi characters shown as visible escapes (docs/threat-model.md T25), like every message.
            "text": visible(content.decode("utf-8", errors="replace")),
        }
        incident_id = caption.incident_id if caption is not None else None
        record = await self._append(body, reply_to=_optional_id(reply_to), incident_id=incident_id)
        await self._publish("message", record)
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

    async def history(self, user: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """The newest messages, oldest first, as `user`'s browser receives them (the read rule applied)."""
        records = await self._store.recent(limit=limit)
        shown = await self._readers.shown(records)
        reader = await self._readers.reader(user)
        return [view_for(record, shown, reader, capabilities=CONSOLE_CAPABILITIES) for record in records]

    async def receive_text(self, user: str, text: str, *, reply_to: int | None = None) -> None:
        """Someone typed `text` (optionally as a reply to message `reply_to`): show it, then hand it on.

        Raises ConsoleInputRejected for empty or oversized text or a reply to a message that does not exist.
        """
        text = text.strip()
        if not text:
            raise ConsoleInputRejected("empty message; type a command such as `df -h`, or /help")
        if len(text) > MAX_TYPED_CHARS:
            raise ConsoleInputRejected(f"message too long ({len(text)} characters, at most {MAX_TYPED_CHARS})")
        replied = await self._store.get(reply_to) if reply_to is not None else None
        if reply_to is not None and replied is None:
            raise ConsoleInputRejected(f"message #{reply_to} does not exist; reload the page and reply again")
        body: dict[str, Any] = {"text": text, "buttons": []}
        if asks_for_command(text, replied):
            body[RUNS_KEY] = True  # shown by the read rule: tagged with its command once its result answers it
        record = await self._append(body, author=user, reply_to=reply_to)
        await self._publish("message", record)
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
        """Someone pressed a button. Only data that the message really carries, as this person sees it (the read
        rule: no Run-again of a command they may not read), is accepted.

        Raises ConsoleInputRejected when the message or the button does not exist (for them).
        """
        record = await self._store.get(message_id)
        if record is None or all(str(d) != data for _, d in record.body.get("buttons", [])):
            raise ConsoleInputRejected("that button is no longer there; reload the page")
        shown = await self._readers.shown([record])
        view = view_for(record, shown, await self._readers.reader(user), capabilities=CONSOLE_CAPABILITIES)
        if all(b["data"] != data for b in view["buttons"]):
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

    def _elsewhere(self, change: ConsoleChange) -> None:
        """Another replica wrote a console message: push it to this replica's tabs too."""
        if not self._subscribers:
            return
        push = asyncio.get_running_loop().create_task(self._push_elsewhere(change))
        self._pushes.add(push)
        push.add_done_callback(self._pushes.discard)

    async def _push_elsewhere(self, change: ConsoleChange) -> None:
        try:
            record = await self._store.get(change.message_id)
        except StorageUnavailable:
            log.warning("console.remote_push_failed", message_id=change.message_id)
            return  # the history has it: the tab shows it at its next load
        if record is not None:
            await self._publish(change.kind, record)

    def _notice(self, user: str, text: str) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.user == user:
                self._push(subscriber, {"type": "notice", "text": text})

    async def _publish(self, kind: str, record: ConsoleMessageRecord) -> None:
        """Push `record` to every tab as its reader may see it (the read rule, decided now, per subscriber)."""
        async with self._publishing:  # one message at a time: every tab gets the room's frames in the same order
            subscribers = list(self._subscribers)
            if not subscribers:
                return
            shown = await self._readers.shown([record])
            for subscriber in subscribers:
                reader = await self._readers.reader(subscriber.user)
                view = view_for(record, shown, reader, capabilities=CONSOLE_CAPABILITIES)
                self._push(subscriber, {"type": kind, "message": view})

    async def _tag_asking_line(self, line_id: int, command_id: int) -> None:
        """The typed line that a command's first message answers asked for that command: tag it, so the read rule
        shows it to who may read the command, and push it again (as an edit) with that decision."""
        try:
            line = await self._store.get(line_id)
            if line is None or not line.body.get(RUNS_KEY) or command_of(line) is not None:
                return
            shown = await self._readers.shown([replace(line, body={**line.body, COMMAND_KEY: command_id})])
            facts = shown.facts.get(command_id)
            if facts is None or facts.requester != line.author:
                return  # not that person's command: the line stays shown to its author (and all-readers) only
            tagged = await self._store.tag(line_id, COMMAND_KEY, command_id)
        except StorageUnavailable:
            log.warning("console.tag_failed", message_id=line_id, command_id=command_id)
            return  # fails closed: the untagged line stays withheld from other readers
        if tagged is not None:
            await self._publish("edit", tagged)

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
    body: dict[str, Any] = {"text": message.plain, "buttons": [[b.label, b.data] for b in message.buttons]}
    if message.command_id is not None:
        body[COMMAND_KEY] = message.command_id
    if message.source is not None:  # it quotes earlier commands: rendered again per reader (chat/console/views.py)
        body[SOURCE_KEY] = message.source.to_json()
    return body
