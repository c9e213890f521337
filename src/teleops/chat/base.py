"""The gateway contract every chat platform implements, and what a platform can do, as data.

The core (outbox worker, notifier, conversation) never probes a gateway with calls that may raise
NotImplementedError: it reads `Gateway.capabilities` (modelled on GoAlert's nfydest TypeInfo) and
renders/schedules accordingly. A gateway only translates: platform events -> `InboundEvent`, and
`Rendered` messages -> platform API calls, raising the `DeliveryError` family on failure.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from teleops.domain.message import Button, Message

if TYPE_CHECKING:
    from teleops.chat.input_watch import InputWatch

__all__ = [
    "Capabilities",
    "DeliveryError",
    "DeliveryRefused",
    "EventHandler",
    "EventKind",
    "Formatting",
    "Gateway",
    "InboundEvent",
    "MarkupRejected",
    "RateLimits",
    "Rendered",
    "RetryLater",
    "TokenRejected",
]


class Formatting(enum.StrEnum):
    """How a platform reads message text; `render.py` has one renderer per kind."""

    PLAIN = "plain"
    HTML = "html"  # Telegram parse_mode=HTML subset: b, i, code, pre, a href
    SLACK_MRKDWN = "slack_mrkdwn"  # Slack mrkdwn text plus Block Kit blocks (`Rendered.blocks`)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What the platform tolerates before answering 429; the outbox worker stays under these.

    `per_chat_interval_s`: minimum gap between two requests to one chat.
    `per_group_per_minute`: new messages per minute in one group chat (None: no such limit).
    `group_chat_prefix`: chat ids starting with this are groups (Telegram: "-"; "" means every chat).
    `global_per_second`: requests per second over all chats.
    `edit_interval_s`: minimum gap between two edits of one message (edits are coalesced to this).
    """

    per_chat_interval_s: float = 1.0
    per_group_per_minute: int | None = 20
    group_chat_prefix: str = "-"
    global_per_second: float = 30.0
    edit_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one platform can do. Read by the core; a gateway never raises NotImplementedError."""

    platform: str
    formatting: Formatting
    max_message_length: int  # characters of visible text the platform accepts in one message
    buttons: bool
    max_button_data_bytes: int  # 0 when buttons is False
    replies: bool  # a message can answer another one (threads, reply_to)
    edits: bool
    files: bool
    max_file_bytes: int  # 0 when files is False
    rate_limits: RateLimits = RateLimits()
    # Each incident message is a thread: answers to a reply in it go into that thread (Slack), not the channel.
    threads: bool = False


class EventKind(enum.StrEnum):
    MESSAGE = "message"  # text typed by someone (possibly a reply, possibly a /command)
    BUTTON = "button"  # someone pressed one of our buttons


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One thing a person did in chat, normalised. Everything in it is untrusted input.

    `user_id` is the platform's immutable id (Telegram `from.id`), never a display name;
    `username` is for display only and must never authorize anything (docs/threat-model.md T04).
    `update_id` identifies the delivery for replay de-duplication (the same id twice runs once).
    """

    platform: str
    kind: EventKind
    chat_id: str
    user_id: str
    text: str
    sent_at: datetime
    update_id: str
    username: str = ""
    message_id: str | None = None  # the platform id of this message (to reply to it)
    reply_to: str | None = None  # the platform message id this message answers
    button_data: str | None = None
    callback_id: str | None = None  # what `Gateway.answer_button` needs for a BUTTON event
    is_forwarded: bool = False
    is_edited: bool = False
    is_bot: bool = False
    from_sender_chat: bool = False  # posted on behalf of a chat/channel (anonymous admin): no person
    is_private_chat: bool = False


EventHandler = Callable[[InboundEvent], Awaitable[None]]


class DeliveryError(Exception):
    """A platform call failed. The subclass tells the outbox what to do next."""


class RetryLater(DeliveryError):
    """Temporary: network, timeout, 5xx, or 429. `retry_after` (seconds) is the platform's own demand."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class MarkupRejected(DeliveryError):
    """The platform could not parse our formatting (Telegram 400 "can't parse entities"): resend as plain text."""


class DeliveryRefused(DeliveryError):
    """Permanent: chat not found, bot removed, message to edit gone. Retrying cannot help."""


class TokenRejected(DeliveryRefused):
    """The platform rejects TeleOps' own credentials (revoked or wrong bot token): nothing will go through it until an
    operator fixes the config. A health problem of the platform (`chat/delivery_health.py`), not a retry loop."""


class Gateway(Protocol):
    """One chat platform. Implementations live in `chat/<platform>/`, the only place its SDK is imported.

    Errors: every sending method raises `RetryLater`, `MarkupRejected` or `DeliveryRefused`; nothing else
    escapes (a gateway maps its SDK's exceptions). Editing a message to identical content is success.
    Input: an update/event the gateway cannot parse or handle never stops the ones after it: it is confirmed to the
    platform (skipped past) and reported through `input_watch.unhandled`.
    """

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def input_watch(self) -> InputWatch:
        """Its input's health: what it could not handle (skipped past, reported) and when receiving last worked."""

    async def start(self, on_event: EventHandler) -> None:
        """Begin receiving; each inbound event is awaited through `on_event` (which never raises)."""

    async def stop(self) -> None:
        """Stop receiving and release connections. Idempotent."""

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        """Post `message`; returns the platform's id of the new message."""

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        """Replace the text (and buttons) of a message we sent earlier."""

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Upload `content` as a document named `filename`; returns the new message's id."""

    async def answer_button(self, callback_id: str, text: str) -> None:
        """Acknowledge a button press with a short notice to the presser (best effort, not via the outbox)."""

    async def leave(self, chat_id: str) -> bool:
        """Leave a chat TeleOps is no longer configured for; True when it left (best effort: logs why not)."""

    async def probe(self) -> str | None:
        """Ask the platform whether it answers and accepts our credentials (Telegram getMe, Slack auth.test), for
        the self-test (server/selfwatch). None when it does; else what failed, said for a person. Never raises."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message in one platform's syntax, plus its plain-text twin for the markup fallback."""

    text: str
    formatting: Formatting
    plain: str
    buttons: tuple[Button, ...] = field(default=())
    # Block Kit blocks (Formatting.SLACK_MRKDWN only): JSON-ready dicts; `text` is then the notification fallback.
    blocks: tuple[dict[str, Any], ...] = field(default=())
    # The incident the message is about (its outbox row's): a reply to it acts on that incident (chat/conversation.py).
    incident_id: int | None = None
    # The command whose line or output it carries (Message.command_id): the console shows it by the read rule.
    command_id: int | None = None
    # The message as the core said it, when it quotes earlier commands (Message.quotes): the console renders it
    # again for each reader who may not read one of them (chat/console/views.py).
    source: Message | None = None

    def as_plain(self) -> Rendered:
        return replace(self, text=self.plain, formatting=Formatting.PLAIN)
