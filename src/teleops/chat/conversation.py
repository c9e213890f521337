"""What TeleOps does with each inbound chat event, in a fixed order of checks:

replay? -> allowed chat? -> forwarded/edited/bot/sender_chat? -> who is it (immutable id)? ->
too old? -> what do they ask -> do it (acks via act_on_incident, commands via the pipeline).

Identity is decided only from (platform, immutable user id); the display name is never consulted.
Unlinked people get one short refusal, then silence; every refusal is logged.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from teleops.chat.base import EventKind, Gateway, InboundEvent
from teleops.chat.commands import CommandRunner
from teleops.chat.notify import Notifier
from teleops.commands.read_access import ReadAccess, Reader
from teleops.config.settings import parse_duration
from teleops.domain.incident import IncidentAction, IncidentStatus, InvalidTransition
from teleops.domain.message import Button, Message
from teleops.memory.run_again import RunAgainRefused, button_data, parse_button
from teleops.memory.service import ScenarioMemory
from teleops.store.audit import AuditUnavailable, record
from teleops.store.database import Database, StorageUnavailable, Transaction
from teleops.store.identities import IdentityStore, LinkError
from teleops.store.incident_events import IncidentEvents
from teleops.store.incidents import IncidentNotFound, act_on_incident, add_note, list_incidents
from teleops.store.outbox import OutboxRow, OutboxStore, enqueue_send, take_heads
from teleops.store.users import UserStore

__all__ = ["Conversation", "ConversationDeps", "Person"]

FUTURE_SKEW = timedelta(seconds=60)  # how far ahead of our clock a message may be dated and still run

log = structlog.get_logger(__name__)

HELP = """TeleOps commands:
/incidents — open incidents
/ack [ID], /resolve [ID], /snooze [ID] 30m — act on an incident (or reply to its message)
/note TEXT — add a note (reply to the incident's message)
/run HOST CMD… — run a command on a host; or reply to an incident with the command
/hosts — hosts with an agent · /cancel ID — stop a command
/history [QUERY] — what was done last time (reply to an incident), or search past scenarios
/oncall — who is on call now and next · /handover — the digest for the next person on call
/heartbeats — jobs that must check in: up, late or new, and when each last pinged
/otp CODE — a one-time code for a command that asks for one (or reply to the prompt with it)
/approve ID, /deny ID — decide on someone else's command that needs a second person
/whoami — your id and this chat's id · /link CODE — link your account"""

_BUTTON = re.compile(r"^(ack|resolve|snooze):(\d{1,12})(?::(\d{1,4}[smhd]))?$")
_COMMAND = re.compile(r"^/([a-z_]{1,32})(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)
MAX_SNOOZE_S = 30 * 86400
_AGAIN_CANCEL = "again-cancel"


class OnCallAnswers(Protocol):
    """What the on-call side answers in chat (oncall/service.py implements it)."""

    async def oncall_message(self) -> Message: ...

    async def handover_message(self, user: str) -> Message: ...


class HeartbeatAnswers(Protocol):
    """What /heartbeats answers (server/heartbeats.py implements it)."""

    async def chat_message(self) -> Message: ...


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str


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
    gateways: Mapping[str, Gateway]
    allowed_chats: Mapping[str, frozenset[str]]  # platform -> chat ids served
    configured: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (platform, id) -> user name
    max_update_age: timedelta = timedelta(minutes=5)
    commands: CommandRunner | None = None
    offer: Callable[[OutboxRow], None] = lambda _row: None  # a row claimed as its chat's head, to its worker


class Conversation:
    def __init__(self, deps: ConversationDeps) -> None:
        self._d = deps
        self._memory: ScenarioMemory | None = None
        self._oncall: OnCallAnswers | None = None
        self._heartbeats: HeartbeatAnswers | None = None

    def use_oncall(self, oncall: OnCallAnswers) -> None:
        """Serve /oncall and /handover from the on-call side."""
        self._oncall = oncall

    def use_heartbeats(self, heartbeats: HeartbeatAnswers) -> None:
        """Serve /heartbeats from the heartbeat monitor."""
        self._heartbeats = heartbeats

    def use_memory(self, memory: ScenarioMemory) -> None:
        """Serve Run-again buttons and /history from scenario memory."""
        self._memory = memory

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
        log_ = log.bind(platform=event.platform, chat_id=event.chat_id, user_id=event.user_id)
        if not await d.identities.first_delivery(event.platform, event.update_id, now=d.clock()):
            log_.info("chat.replay_ignored", update_id=event.update_id)
            return
        if event.chat_id not in d.allowed_chats.get(event.platform, frozenset()):
            log_.warning("chat.chat_not_allowed")
            return
        if event.is_forwarded or event.is_edited:
            log_.info("chat.ignored", forwarded=event.is_forwarded, edited=event.is_edited)
            return
        if event.is_bot or event.from_sender_chat:
            log_.warning("chat.not_a_person", is_bot=event.is_bot, sender_chat=event.from_sender_chat)
            return
        command, args = _parse(event.text) if event.kind is EventKind.MESSAGE else ("", "")
        if command == "whoami":
            await self._whoami(event)
            return
        if command == "link":
            await self._link(event, args)
            return
        person = await self._identify(event)
        if person is None:
            if await d.identities.first_refusal(event.platform, event.user_id, event.chat_id, now=d.clock()):
                await self._say(
                    event,
                    "You are not linked to a TeleOps user, so I cannot act for you. "
                    "Ask an admin for a code (`teleops user invite NAME`) and send /link CODE.",
                )
            log_.warning("chat.refused_unlinked", username=event.username, audit=True)
            await self._answer(event, "Not linked: ask an admin for a link code.")
            return
        age = d.clock() - event.sent_at
        if age > d.max_update_age:
            minutes = int(age.total_seconds() // 60)
            await self._say(
                event,
                f"Your message is {minutes} min old (TeleOps was probably offline); it was not executed. "
                "Send it again if you still want it.",
            )
            await self._answer(event, "Too old: not executed.")
            return
        if -age > FUTURE_SKEW:
            # Dated ahead of this clock by more than skew: a replay with a forged date, or a server whose clock is
            # wrong; either way its age cannot be judged, so it is not executed (issue #19.2).
            log_.warning("chat.dated_in_the_future", seconds_ahead=round(-age.total_seconds()))
            await self._say(event, "Your message is dated in the future (a clock is wrong); it was not executed.")
            await self._answer(event, "Dated in the future: not executed.")
            return
        log_ = log_.bind(user=person.name)
        if event.kind is EventKind.BUTTON:
            await self._button(event, person)
        elif command:
            await self._command(event, person, command, args)
        elif event.reply_to is not None:
            await self._reply(event, person)

    # -- identity ---------------------------------------------------------------------------------

    async def _identify(self, event: InboundEvent) -> Person | None:
        d = self._d
        name = d.configured.get((event.platform, event.user_id))
        if name is None:
            name = await d.identities.user_of(event.platform, event.user_id)
        if name is None:
            return None
        user = await d.users.get(name)
        return Person(name, user.role) if user is not None else None

    async def _whoami(self, event: InboundEvent) -> None:
        person = await self._identify(event)
        who = f"linked to TeleOps user {person.name} ({person.role})" if person else "not linked"
        await self._say(
            event, f"You are {event.platform} user {event.user_id} ({who}). This chat's id is {event.chat_id}."
        )

    async def _link(self, event: InboundEvent, code: str) -> None:
        if not code.strip():
            await self._say(event, "Usage: /link CODE — get a code from an admin (`teleops user invite NAME`).")
            return
        try:
            name = await self._d.identities.link(event.platform, event.user_id, code, now=self._d.clock())
        except LinkError as exc:
            await self._say(event, f"Link failed: {exc}.")
            return
        log.info("chat.linked", platform=event.platform, user_id=event.user_id, user=name, audit=True)
        await self._say(event, f"Linked: you are {name} in TeleOps now.")

    # -- actions ----------------------------------------------------------------------------------

    async def _button(self, event: InboundEvent, person: Person) -> None:
        again = parse_button(event.button_data or "")
        if again is not None:
            await self._run_again(event, person, *again)
            return
        if event.button_data == _AGAIN_CANCEL:
            await self._answer(event, "Not run.")
            return
        access = self._d.commands.access if self._d.commands is not None else None
        if access is not None and await access.button(event, person.name):
            return  # Approve / Deny
        match = _BUTTON.match(event.button_data or "")
        if match is None:
            await self._answer(event, "Unknown button.")
            return
        action, incident_id, duration = match.group(1), int(match.group(2)), match.group(3)
        pressed_on = await self._d.outbox.find_message(event.platform, event.chat_id, event.message_id or "")
        if pressed_on is None or pressed_on.incident_id != incident_id:
            # A button acts only on the incident of the message it is on: forged callback data cannot reach
            # another incident (issue #19.5).
            log.warning(
                "chat.button_refused",
                platform=event.platform,
                user=person.name,
                data=(event.button_data or "")[:64],
                message_incident=None if pressed_on is None else pressed_on.incident_id,
            )
            with contextlib.suppress(StorageUnavailable, AuditUnavailable):
                await record(
                    self._d.db,
                    at=self._d.clock(),
                    actor=person.name,
                    action="chat.button_refused",
                    subject=f"incident:{incident_id}",
                    data={
                        "platform": event.platform,
                        "chat_id": event.chat_id,
                        "message_id": event.message_id,
                        "button": (event.button_data or "")[:64],
                        "message_incident": None if pressed_on is None else pressed_on.incident_id,
                    },
                )
            await self._answer(event, "This button is not for this message's incident; nothing was done.")
            return
        text = await self._act(event, person, incident_id, IncidentAction(action), duration)
        await self._answer(event, text)

    async def _act(
        self, event: InboundEvent, person: Person, incident_id: int, action: IncidentAction, duration: str | None
    ) -> str:
        d = self._d
        now = d.clock()
        until = None
        if action is IncidentAction.SNOOZE:
            try:
                seconds = parse_duration(duration or "1h")
            except ValueError as exc:
                return f"{exc}."
            if not 0 < seconds <= MAX_SNOOZE_S:
                return "Snooze for between 1s and 30d."
            until = now + timedelta(seconds=seconds)
        try:
            _, changed = await act_on_incident(
                d.db,
                incident_id,
                action,
                actor=person.name,
                now=now,
                snooze_until=until,
                via=f"{event.platform}:{event.user_id}",
                events=d.incident_events,
            )
        except IncidentNotFound:
            return f"Incident #{incident_id} does not exist; /incidents lists the open ones."
        except InvalidTransition as exc:
            return f"#{incident_id}: {exc}."
        verb = {"ack": "acknowledged", "resolve": "resolved", "snooze": "snoozed"}[action.value]
        return f"#{incident_id} {verb}." if changed else f"#{incident_id} was already {verb}."

    async def _command(self, event: InboundEvent, person: Person, command: str, args: str) -> None:
        if command == "help" or command == "start":
            await self._say(event, HELP)
        elif command in ("ack", "resolve", "snooze"):
            words = args.split()
            incident_id = await self._target(event, words[0] if words and words[0].isdigit() else None)
            if incident_id is None:
                await self._say(event, f"Which incident? Reply to its message with /{command}, or send /{command} ID.")
                return
            duration = next((w for w in words if not w.isdigit()), None)
            await self._say(event, await self._act(event, person, incident_id, IncidentAction(command), duration))
        elif command == "note":
            incident_id = await self._target(event, None)
            if incident_id is None or not args.strip():
                await self._say(event, "Reply to an incident's message with /note TEXT.")
                return
            await add_note(
                self._d.db, incident_id, actor=person.name, text=args.strip()[:4000], now=self._d.clock(),
                via=f"{event.platform}:{event.user_id}",
            )  # fmt: skip
            await self._say(event, f"Note added to #{incident_id}.")
        elif command == "incidents":
            await self._incidents(event)
        elif command in ("run", "hosts", "cancel"):
            await self._commands_verb(event, person, command, args)
        elif command == "history":
            await self._history(event, person, args.strip())
        elif command in ("otp", "approve", "deny"):
            await self._access_verb(event, person, command, args)
        elif command in ("oncall", "handover"):
            if self._oncall is None:
                await self._say(event, "On-call answers are not available on this server.")
                return
            answer = (
                await self._oncall.oncall_message()
                if command == "oncall"
                else await self._oncall.handover_message(person.name)
            )
            await self.post(event.platform, event.chat_id, answer)
        elif command == "heartbeats":
            if self._heartbeats is None:
                await self._say(event, "Heartbeats are not available on this server.")
                return
            await self.post(event.platform, event.chat_id, await self._heartbeats.chat_message())
        else:
            await self._say(event, f"Unknown command /{command}. /help lists what I understand.")

    async def _commands_verb(self, event: InboundEvent, person: Person, command: str, args: str) -> None:
        runner = self._d.commands
        if runner is None:
            await self._say(event, "Running commands is not available on this server (no agent hub).")
            return
        if command == "hosts":
            await self._say(event, await runner.hosts())
        elif command == "cancel":
            await self._say(event, await runner.cancel(person.name, person.role, args.strip()))
        else:
            host, _, text = args.strip().partition(" ")
            if not host or not text.strip():
                await self._say(event, "Usage: /run HOST CMD…, e.g. /run web-1 uptime")
                return
            await runner.run(event, person.name, person.role, host, text.strip(), incident_id=None)

    async def _access_verb(self, event: InboundEvent, person: Person, command: str, args: str) -> None:
        access = self._d.commands.access if self._d.commands is not None else None
        if access is None:
            await self._say(event, "2FA and approvals are not available on this server (no agent hub).")
        elif command == "otp":
            await access.otp(event, person.name, person.role, args)
        else:
            await access.vote_command(event, person.name, command, args)

    async def _reply(self, event: InboundEvent, person: Person) -> None:
        access = self._d.commands.access if self._d.commands is not None else None
        if access is not None and await access.answers_prompt(event):
            await access.otp(event, person.name, person.role, event.text)  # a code, never a command
            return
        incident_id = await self._target(event, None)
        if incident_id is None or not event.text.strip():
            return  # a reply to something that is not an incident: ordinary chat, not for us
        runner = self._d.commands
        if runner is None:
            await self._say(event, "Running commands is not available on this server (no agent hub).")
            return
        host = await runner.incident_host(incident_id)
        if host is None:
            await self._say(event, f"Incident #{incident_id} names no host; use /run HOST CMD… instead.")
            return
        await runner.run(event, person.name, person.role, host, event.text.strip(), incident_id=incident_id)

    async def _run_again(
        self, event: InboundEvent, person: Person, confirmed: bool, incident_id: int, command_id: int
    ) -> None:
        """A Run-again press: re-check it, preview exactly what runs where, run only on the confirm press."""
        memory, runner = self._memory, self._d.commands
        if memory is None or runner is None:
            await self._answer(event, "Run again is not available on this server.")
            return
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

    async def _history(self, event: InboundEvent, person: Person, query: str) -> None:
        # Only what this person may read: commands of others are shown without command line and output.
        access = ReadAccess(self._d.db, Reader(person.name, person.role))
        memory = self._memory
        if memory is None:
            await self._say(event, "Scenario memory is not available on this server.")
            return
        if not query:
            incident_id = await self._target(event, None)
            if incident_id is None:
                await self._say(event, "Reply to an incident's message with /history, or send /history WORDS.")
                return
            await self._say(event, await memory.history_text(incident_id, access=access))
            return
        await self._say(event, await memory.search_text(query, access=access))

    async def _target(self, event: InboundEvent, explicit: str | None) -> int | None:
        if explicit is not None:
            return int(explicit)
        if event.reply_to is None:
            return None
        row = await self._d.outbox.find_message(event.platform, event.chat_id, event.reply_to)
        return row.incident_id if row is not None else None

    async def _incidents(self, event: InboundEvent) -> None:
        rows = []
        for status in (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.SNOOZED):
            rows.extend(await list_incidents(self._d.db, status=status, limit=20))
        if not rows:
            await self._say(event, "No open incidents.")
            return
        lines = [
            f"#{r.id} {r.severity} {r.name} on {r.host or '?'} — {r.status}" for r in sorted(rows, key=lambda r: -r.id)
        ]
        await self._say(event, "\n".join(lines[:30]))

    # -- output -----------------------------------------------------------------------------------

    async def _say(self, event: InboundEvent, text: str) -> None:
        await self.post(event.platform, event.chat_id, Message(body=text), reply_to=await self.thread_of(event))

    async def thread_of(self, event: InboundEvent) -> int | None:
        """On a platform with threads (`Capabilities.threads`), the outbox row of the thread `event` was posted
        in, so that answers go into that thread; None elsewhere or outside a thread of ours.
        """
        gateway = self._d.gateways.get(event.platform)
        if gateway is None or not gateway.capabilities.threads or event.reply_to is None:
            return None
        row = await self._d.outbox.find_message(event.platform, event.chat_id, event.reply_to)
        return row.id if row is not None else None

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
        d = self._d

        def apply(conn: Transaction) -> tuple[int, list[OutboxRow]]:
            row_id = enqueue_send(
                conn,
                platform=platform,
                chat_id=chat_id,
                payload={"message": message.to_json()},
                now=d.clock(),
                incident_id=incident_id,
                reply_to=reply_to,
            )
            return row_id, take_heads(conn, [row_id])

        row_id, taken = await d.outbox.run(apply)
        if taken:  # the chat has nothing before it: straight to the worker, no read and no claim (B6 chat reply)
            d.offer(taken[0])
        else:
            d.wake()
        return int(row_id)

    async def _answer(self, event: InboundEvent, text: str) -> None:
        if event.kind is EventKind.BUTTON and event.callback_id:
            gateway = self._d.gateways.get(event.platform)
            if gateway is not None:
                await gateway.answer_button(event.callback_id, text)


def _parse(text: str) -> tuple[str, str]:
    match = _COMMAND.match(text.strip())
    if match is None:
        return "", ""
    return match.group(1).lower(), (match.group(2) or "")
