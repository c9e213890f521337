"""What TeleOps does with each inbound chat event: the ordered checks of chat/inbound.py, then one of

- a button press: Run again (scenario memory), Approve/Deny (chat/access.py), Ack/Resolve/Snooze on an incident;
- a command: its handler in the verb table (chat/verbs.py), or the unknown-command answer;
- a reply to an incident's message: a code when it answers a code prompt, else a command for the incident's host.

Anything else (ordinary chat) is left alone. Answers go through chat/reply.py; a failure is logged and told.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from teleops.chat.access import AccessDialog
from teleops.chat.base import EventKind, Gateway, InboundEvent
from teleops.chat.commands import CommandRunner
from teleops.chat.desk import Desk, HeartbeatAnswers, OnCallAnswers
from teleops.chat.inbound import CHECKS, Checkpoint, Person, Turn, pass_checks
from teleops.chat.incident_verbs import incident_button
from teleops.chat.notify import Notifier
from teleops.chat.reply import Replies
from teleops.chat.verbs import VERBS, unknown_verb
from teleops.domain.message import Button, Message
from teleops.memory.run_again import RunAgainRefused, button_data, parse_button
from teleops.memory.service import ScenarioMemory
from teleops.store.database import Database, StorageUnavailable
from teleops.store.identities import IdentityStore
from teleops.store.incident_events import IncidentEvents
from teleops.store.outbox import OutboxStore
from teleops.store.users import UserStore

__all__ = ["Conversation", "ConversationDeps", "HeartbeatAnswers", "OnCallAnswers", "Person"]

log = structlog.get_logger(__name__)

_AGAIN_CANCEL = "again-cancel"


@dataclass(slots=True)
class ConversationDeps:
    db: Database
    incident_events: IncidentEvents
    identities: IdentityStore
    outbox: OutboxStore
    users: UserStore
    notifier: Notifier
    clock: Callable[[], datetime]
    wake: Callable[[], None]
    replies: Replies
    commands: CommandRunner
    access: AccessDialog  # one-time codes and approvals in chat
    memory: ScenarioMemory
    heartbeats: HeartbeatAnswers
    gateways: Mapping[str, Gateway]
    allowed_chats: Mapping[str, frozenset[str]]  # platform -> chat ids served
    configured: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (platform, id) -> user name
    max_update_age: timedelta = timedelta(minutes=5)


class Conversation:
    def __init__(self, deps: ConversationDeps) -> None:
        self._d = deps
        self._oncall: OnCallAnswers | None = None
        self.replies = deps.replies

    def use_oncall(self, oncall: OnCallAnswers) -> None:
        """Serve /oncall and /handover from the on-call side. The one part bound after construction: on-call is built
        after chat, because it pages through chat's outbox (server/app.py)."""
        self._oncall = oncall

    def _oncall_answers(self) -> OnCallAnswers:
        if self._oncall is None:
            raise RuntimeError("use_oncall must be called before the chat service starts (server/app.py)")
        return self._oncall

    async def handle(self, event: InboundEvent) -> None:
        """Handle one event. Never raises: a failure is logged and, where useful, told to the sender."""
        try:
            await self._handle(event)
        except StorageUnavailable as exc:
            log.warning("chat.storage_unavailable", error=str(exc))
            await self._say(event, "TeleOps is busy (database unavailable); nothing was done. Try again in a minute.")
        except Exception:
            log.exception("chat.event_failed", platform=event.platform, update_id=event.update_id)
            # Invariant: a person who asked gets an answer, even when the answer is "that failed".
            with contextlib.suppress(Exception):
                await self._say(
                    event,
                    f"That failed inside TeleOps and nothing was run (update {event.update_id}). "
                    "Try again; if it keeps failing, an admin finds the error in the TeleOps log under that id.",
                )

    async def _handle(self, event: InboundEvent) -> None:
        d = self._d
        checkpoint = Checkpoint(
            identities=d.identities, users=d.users, replies=self.replies, clock=d.clock,
            allowed_chats=d.allowed_chats, configured=d.configured, max_update_age=d.max_update_age,
        )  # fmt: skip
        turn = await pass_checks(checkpoint, Turn(event), CHECKS)
        if turn is None or turn.person is None:
            return
        desk = Desk(
            db=d.db, incident_events=d.incident_events, outbox=d.outbox, replies=self.replies, clock=d.clock,
            commands=d.commands, access=d.access, memory=d.memory, oncall=self._oncall_answers(),
            heartbeats=d.heartbeats,
        )  # fmt: skip
        if event.kind is EventKind.BUTTON:
            await self._button(desk, turn, turn.person)
        elif turn.verb:
            await VERBS.get(turn.verb, unknown_verb)(desk, turn, turn.person)
        elif event.reply_to is not None:
            await self._reply(desk, turn, turn.person)

    async def _button(self, desk: Desk, turn: Turn, person: Person) -> None:
        event = turn.event
        again = parse_button(event.button_data or "")
        if again is not None:
            await self._run_again(event, person, *again)
            return
        if event.button_data == _AGAIN_CANCEL:
            await self._answer(event, "Not run.")
            return
        if await desk.access.button(event, person.name):
            return  # Approve / Deny
        await incident_button(desk, turn, person)

    async def _reply(self, desk: Desk, turn: Turn, person: Person) -> None:
        """A reply that is not a command: a code when it answers our code prompt, a command when it answers an
        incident's message (run on that incident's host); ordinary chat otherwise."""
        event = turn.event
        if await desk.access.answers_prompt(event):
            await desk.access.otp(event, person.name, person.role, event.text)  # a code, never a command
            return
        incident_id = await desk.target(event, None)
        if incident_id is None or not event.text.strip():
            return  # a reply to something that is not an incident: ordinary chat, not for us
        runner = desk.commands
        host = await runner.incident_host(incident_id)
        if host is None:
            await self._say(event, f"Incident #{incident_id} names no host; use /run HOST CMD… instead.")
            return
        await runner.run(event, person.name, person.role, host, event.text.strip(), incident_id=incident_id)

    async def _run_again(
        self, event: InboundEvent, person: Person, confirmed: bool, incident_id: int, command_id: int
    ) -> None:
        """A Run-again press: re-check it, preview exactly what runs where, run only on the confirm press."""
        memory, runner = self._d.memory, self._d.commands
        try:
            choice = await memory.check_run_again(incident_id, command_id)
        except RunAgainRefused as exc:
            await self._answer(event, "Not run.")
            await self._say(event, f"Not run: {exc}.")
            return
        if not confirmed:
            confirm = Button("▶ Run it", button_data(incident_id, command_id, confirm=True))
            preview = Message(body=choice.preview(), buttons=(confirm, Button("Cancel", _AGAIN_CANCEL)))
            await self.post(event.platform, event.chat_id, preview, incident_id=incident_id)
            await self._answer(event, "Check the command, then confirm.")
            return
        # A preview confirms once: a second press (double tap, or another person) on the same preview runs nothing.
        once = f"run-again:{event.chat_id}:{event.message_id or event.update_id}"
        if not await self._d.identities.first_delivery(event.platform, once, now=self._d.clock()):
            await self._answer(
                event, "Already confirmed from this preview; press the Run-again button again for a new one."
            )
            return
        await self._answer(event, f"Running as {person.name}…")
        # The whole pipeline (policy, step-up, approval, audit) decides, for the person who pressed.
        await runner.run(event, person.name, person.role, choice.host, choice.text, incident_id=incident_id)

    # -- output -----------------------------------------------------------------------------------

    async def _say(self, event: InboundEvent, text: str) -> None:
        await self.replies.say(event, text)

    async def thread_of(self, event: InboundEvent) -> int | None:
        """On a platform with threads (`Capabilities.threads`), the outbox row of the thread `event` was posted
        in, so that answers go into that thread; None elsewhere or outside a thread of ours.
        """
        return await self.replies.thread_of(event)

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
        return await self.replies.post(platform, chat_id, message, incident_id=incident_id, reply_to=reply_to)

    async def _answer(self, event: InboundEvent, text: str) -> None:
        await self.replies.answer_button(event, text)
