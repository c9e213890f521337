"""Answering in chat: every message TeleOps sends in answer to an inbound event goes through `Replies`.

One helper for the conversation, the command runner (chat/commands.py) and the access dialog (chat/access.py), so
that none of them needs another to talk: the runner and the dialog used to reach each other for this, an import
circle (issue #22). A message is queued in the outbox (on disk before it is sent, rate-limited per chat) and handed
straight to its platform's worker when nothing in that chat is ahead of it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from teleops.chat.base import EventKind, Gateway, InboundEvent
from teleops.domain.message import Message
from teleops.store.outbox import OutboxStore

__all__ = ["Replies"]


class Replies:
    """Queue answers to inbound events (and other chat messages) through the outbox."""

    def __init__(
        self,
        *,
        outbox: OutboxStore,
        gateway_of: Callable[[str], Gateway | None],
        clock: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        self._outbox = outbox
        self._gateway_of = gateway_of
        self._clock = clock
        self._wake = wake

    async def post(
        self,
        platform: str,
        chat_id: str,
        message: Message,
        *,
        incident_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Queue a message through the outbox (rate-limited; on disk before it is sent) and wake the worker. Returns
        the row id.

        `reply_to`: the outbox row whose message this answers (a thread on Slack).
        """

        row_id, handed_over = await self._outbox.send(
            platform=platform,
            chat_id=chat_id,
            payload={"message": message.to_json()},
            now=self._clock(),
            incident_id=incident_id,
            reply_to=reply_to,
        )
        if not handed_over:  # handed over: the worker has it already, with no read and no claim (B6 chat reply)
            self._wake()
        return row_id

    async def thread_of(self, event: InboundEvent) -> int | None:
        """On a platform with threads (`Capabilities.threads`), the outbox row of the thread `event` was posted
        in, so that answers go into that thread; None elsewhere or outside a thread of ours.
        """
        gateway = self._gateway_of(event.platform)
        if gateway is None or not gateway.capabilities.threads or event.reply_to is None:
            return None
        row = await self._outbox.find_message(event.platform, event.chat_id, event.reply_to)
        return row.id if row is not None else None

    async def say(self, event: InboundEvent, text: str, incident_id: int | None = None) -> int:
        """Answer `event` in its chat (in its thread where the platform has threads); returns the outbox row."""
        return await self.send(event, Message(body=text), incident_id)

    async def send(self, event: InboundEvent, message: Message, incident_id: int | None = None) -> int:
        """Answer `event` with a whole message (buttons, a command id…) in its chat and thread."""
        return await self.post(
            event.platform, event.chat_id, message, incident_id=incident_id, reply_to=await self.thread_of(event)
        )

    async def answer_button(self, event: InboundEvent, text: str) -> None:
        """The short notice a platform shows to the person who pressed a button; nothing for other events."""
        if event.kind is not EventKind.BUTTON or not event.callback_id:
            return
        gateway = self._gateway_of(event.platform)
        if gateway is not None:
            await gateway.answer_button(event.callback_id, text)
