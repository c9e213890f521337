"""What the chat verbs act with: one `Desk` per inbound event, built by the conversation after the checks passed.

The verbs (chat/verbs.py, chat/incident_verbs.py) are plain functions of (desk, turn, person); every service they act
with is here (the controller builds all of them, server/app.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from teleops.chat.access import AccessDialog
from teleops.chat.base import InboundEvent
from teleops.chat.commands import CommandRunner
from teleops.chat.inbound import Person, Turn
from teleops.chat.reply import Replies
from teleops.domain.message import Message
from teleops.memory.service import ScenarioMemory
from teleops.store.database import Database
from teleops.store.incident_events import IncidentEvents
from teleops.store.outbox import OutboxStore

__all__ = ["Desk", "HeartbeatAnswers", "OnCallAnswers", "Verb"]


class OnCallAnswers(Protocol):
    """What the on-call side answers in chat (oncall/service.py implements it)."""

    async def oncall_message(self) -> Message: ...

    async def handover_message(self, user: str) -> Message: ...


class HeartbeatAnswers(Protocol):
    """What /heartbeats answers (server/heartbeats.py implements it)."""

    async def chat_message(self) -> Message: ...


@dataclass(frozen=True, slots=True)
class Desk:
    db: Database
    incident_events: IncidentEvents
    outbox: OutboxStore
    replies: Replies
    clock: Callable[[], datetime]
    commands: CommandRunner
    access: AccessDialog  # one-time codes, Duo pushes and approvals
    memory: ScenarioMemory
    oncall: OnCallAnswers
    heartbeats: HeartbeatAnswers

    async def say(self, event: InboundEvent, text: str) -> None:
        await self.replies.say(event, text)

    async def post(self, event: InboundEvent, message: Message, *, incident_id: int | None = None) -> None:
        """A whole message into `event`'s chat, as a new message (not in a thread)."""
        await self.replies.post(event.platform, event.chat_id, message, incident_id=incident_id)

    async def target(self, event: InboundEvent, explicit: str | None) -> int | None:
        """The incident a verb is about: the id given, else the incident of the message `event` replies to."""
        if explicit is not None:
            return int(explicit)
        if event.reply_to is None:
            return None
        row = await self.outbox.find_message(event.platform, event.chat_id, event.reply_to)
        return row.incident_id if row is not None else None


# A verb acts on a turn that passed every check, for the person the checks identified.
Verb = Callable[[Desk, Turn, Person], Awaitable[None]]
