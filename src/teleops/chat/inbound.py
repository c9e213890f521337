"""The checks every inbound chat event passes before anything is done for it, as an ordered list.

Modelled on slack-bolt's middleware: each check is a small function that either lets the event through (possibly
knowing more about it: the verb it asks, the person who sent it) or ends it there, having answered, logged or
audited as that check requires. Handlers after the list never check again. The order is the contract:

    replay_guard -> allowed_chat -> not_forwarded_or_edited -> from_a_person -> read_verb -> open_verbs ->
    identify_person -> not_stale -> not_from_the_future

A replay, a chat we do not serve, a forwarded or edited message and a bot are dropped silently (logged only):
answering them would let anyone make TeleOps talk. `/whoami` and `/link` are answered before identity, since
they are how a person gets one. Identity is decided only from (platform, immutable user id); the display name
is never consulted. Unlinked people get one short refusal, then silence; every refusal is logged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from teleops.chat.base import EventKind, InboundEvent
from teleops.chat.reply import Replies
from teleops.store.identities import IdentityStore, LinkError
from teleops.store.users import UserStore

__all__ = ["CHECKS", "FUTURE_SKEW", "Check", "Checkpoint", "Person", "Turn", "identify", "pass_checks"]

FUTURE_SKEW = timedelta(seconds=60)  # how far ahead of our clock a message may be dated and still run

log = structlog.get_logger(__name__)

_COMMAND = re.compile(r"^/([a-z_]{1,32})(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One inbound event on its way through the checks, with what they have learned about it so far."""

    event: InboundEvent
    verb: str = ""  # the command without its slash ("ack"), "" when the event is not a command
    args: str = ""  # the rest of the command's line
    person: Person | None = None  # the TeleOps user who sent it, once `identify_person` has passed it


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the checks read and answer with."""

    identities: IdentityStore
    users: UserStore
    replies: Replies
    clock: Callable[[], datetime]
    allowed_chats: Mapping[str, frozenset[str]]  # platform -> chat ids served
    configured: Mapping[tuple[str, str], str]  # (platform, id) -> user name, from the config file
    max_update_age: timedelta


# A check returns the turn to go on with, or None when the event ends there.
Check = Callable[[Checkpoint, Turn], Awaitable[Turn | None]]


async def pass_checks(at: Checkpoint, turn: Turn, checks: tuple[Check, ...]) -> Turn | None:
    """Run `turn` through `checks` in order; the turn that passed them all, or None when one ended it."""
    for check in checks:
        passed = await check(at, turn)
        if passed is None:
            return None
        turn = passed
    return turn


def _log(event: InboundEvent) -> structlog.typing.FilteringBoundLogger:
    bound: structlog.typing.FilteringBoundLogger = log.bind(
        platform=event.platform, chat_id=event.chat_id, user_id=event.user_id
    )
    return bound


async def replay_guard(at: Checkpoint, turn: Turn) -> Turn | None:
    """A delivery seen before (a platform retry, a replayed webhook) is done nothing for again."""
    event = turn.event
    if not await at.identities.first_delivery(event.platform, event.update_id, now=at.clock()):
        _log(event).info("chat.replay_ignored", update_id=event.update_id)
        return None
    return turn


async def allowed_chat(at: Checkpoint, turn: Turn) -> Turn | None:
    """Only the chats in the config are served."""
    event = turn.event
    if event.chat_id not in at.allowed_chats.get(event.platform, frozenset()):
        _log(event).warning("chat.chat_not_allowed")
        return None
    return turn


async def not_forwarded_or_edited(at: Checkpoint, turn: Turn) -> Turn | None:
    """A forwarded or edited message is not a fresh request from its sender."""
    event = turn.event
    if event.is_forwarded or event.is_edited:
        _log(event).info("chat.ignored", forwarded=event.is_forwarded, edited=event.is_edited)
        return None
    return turn


async def from_a_person(at: Checkpoint, turn: Turn) -> Turn | None:
    """Bots and messages sent as a channel have no person behind them to act for."""
    event = turn.event
    if event.is_bot or event.from_sender_chat:
        _log(event).warning("chat.not_a_person", is_bot=event.is_bot, sender_chat=event.from_sender_chat)
        return None
    return turn


async def read_verb(at: Checkpoint, turn: Turn) -> Turn | None:
    """Which command a message is (`/ack@TeleOpsBot 12` -> "ack", "12"); never ends the turn."""
    if turn.event.kind is not EventKind.MESSAGE:
        return turn
    match = _COMMAND.match(turn.event.text.strip())
    if match is None:
        return turn
    return replace(turn, verb=match.group(1).lower(), args=match.group(2) or "")


async def open_verbs(at: Checkpoint, turn: Turn) -> Turn | None:
    """`/whoami` and `/link CODE`: answered for anyone in an allowed chat, since they are how one gets linked."""
    if turn.verb == "whoami":
        await _whoami(at, turn.event)
        return None
    if turn.verb == "link":
        await _link(at, turn.event, turn.args)
        return None
    return turn


async def identify_person(at: Checkpoint, turn: Turn) -> Turn | None:
    """Who sent it, from (platform, immutable user id) only. Unlinked: one refusal per person and chat, then
    silence; every refusal is logged for the audit."""
    event = turn.event
    person = await identify(at, event)
    if person is None:
        if await at.identities.first_refusal(event.platform, event.user_id, event.chat_id, now=at.clock()):
            await at.replies.say(
                event,
                "You are not linked to a TeleOps user, so I cannot act for you. "
                "Ask an admin for a code (`teleops user invite NAME`) and send /link CODE.",
            )
        _log(event).warning("chat.refused_unlinked", username=event.username, audit=True)
        await at.replies.answer_button(event, "Not linked: ask an admin for a link code.")
        return None
    return replace(turn, person=person)


async def not_stale(at: Checkpoint, turn: Turn) -> Turn | None:
    """A message older than `max_update_age` (TeleOps was offline) is not executed late; the sender is told."""
    event = turn.event
    age = at.clock() - event.sent_at
    if age > at.max_update_age:
        minutes = int(age.total_seconds() // 60)
        await at.replies.say(
            event,
            f"Your message is {minutes} min old (TeleOps was probably offline); it was not executed. "
            "Send it again if you still want it.",
        )
        await at.replies.answer_button(event, "Too old: not executed.")
        return None
    return turn


async def not_from_the_future(at: Checkpoint, turn: Turn) -> Turn | None:
    """Dated ahead of this clock by more than FUTURE_SKEW: a replay with a forged date, or a server whose clock is
    wrong; either way its age cannot be judged, so it is not executed (issue #19.2)."""
    event = turn.event
    age = at.clock() - event.sent_at
    if -age > FUTURE_SKEW:
        _log(event).warning("chat.dated_in_the_future", seconds_ahead=round(-age.total_seconds()))
        await at.replies.say(event, "Your message is dated in the future (a clock is wrong); it was not executed.")
        await at.replies.answer_button(event, "Dated in the future: not executed.")
        return None
    return turn


CHECKS: tuple[Check, ...] = (
    replay_guard,
    allowed_chat,
    not_forwarded_or_edited,
    from_a_person,
    read_verb,
    open_verbs,
    identify_person,
    not_stale,
    not_from_the_future,
)


# -- identity -------------------------------------------------------------------------------------


async def identify(at: Checkpoint, event: InboundEvent) -> Person | None:
    """The TeleOps user behind `event`'s sender: the config file's identities first, then linked ones."""
    name = at.configured.get((event.platform, event.user_id))
    if name is None:
        name = await at.identities.user_of(event.platform, event.user_id)
    if name is None:
        return None
    user = await at.users.get(name)
    return Person(name, user.role) if user is not None else None


async def _whoami(at: Checkpoint, event: InboundEvent) -> None:
    person = await identify(at, event)
    who = f"linked to TeleOps user {person.name} ({person.role})" if person else "not linked"
    await at.replies.say(
        event, f"You are {event.platform} user {event.user_id} ({who}). This chat's id is {event.chat_id}."
    )


async def _link(at: Checkpoint, event: InboundEvent, code: str) -> None:
    if not code.strip():
        await at.replies.say(event, "Usage: /link CODE — get a code from an admin (`teleops user invite NAME`).")
        return
    try:
        name = await at.identities.link(event.platform, event.user_id, code, now=at.clock())
    except LinkError as exc:
        await at.replies.say(event, f"Link failed: {exc}.")
        return
    log.info("chat.linked", platform=event.platform, user_id=event.user_id, user=name, audit=True)
    await at.replies.say(event, f"Linked: you are {name} in TeleOps now.")
