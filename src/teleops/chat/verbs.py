"""The chat commands TeleOps understands, as one table from verb to handler (`VERBS`).

A verb runs only after every check in chat/inbound.py passed, for the person they identified; it never checks
access itself (what a person may run is decided by the command pipeline, what they may read by read_access).
`/whoami` and `/link` are not here: they are answered before identity (chat/inbound.py `open_verbs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from teleops.chat.desk import Desk, Verb
from teleops.chat.inbound import Person, Turn
from teleops.chat.incident_verbs import incident_action, incidents, note
from teleops.commands.read_access import ReadAccess, Reader

__all__ = ["HELP", "VERBS", "unknown_verb"]

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


async def help_(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.say(turn.event, HELP)


async def run(desk: Desk, turn: Turn, person: Person) -> None:
    """`/run HOST CMD…`: through the whole command pipeline (policy, step-up, approval, audit)."""
    host, _, text = turn.args.strip().partition(" ")
    if not host or not text.strip():
        await desk.say(turn.event, "Usage: /run HOST CMD…, e.g. /run web-1 uptime")
        return
    await desk.commands.run(turn.event, person.name, person.role, host, text.strip(), incident_id=None)


async def hosts(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.say(turn.event, await desk.commands.hosts())


async def cancel(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.say(turn.event, await desk.commands.cancel(person.name, person.role, turn.args.strip()))


async def history(desk: Desk, turn: Turn, person: Person) -> None:
    """`/history` in reply to an incident: what was done last time; `/history WORDS`: search past scenarios."""
    event, query = turn.event, turn.args.strip()
    # Only what this person may read: commands of others are shown without command line and output.
    access = ReadAccess(desk.db, Reader(person.name, person.role))
    if not query:
        incident_id = await desk.target(event, None)
        if incident_id is None:
            await desk.say(event, "Reply to an incident's message with /history, or send /history WORDS.")
            return
        await desk.say(event, await desk.memory.history_text(incident_id, access=access))
        return
    await desk.say(event, await desk.memory.search_text(query, access=access))


async def otp(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.access.otp(turn.event, person.name, person.role, turn.args)


async def vote(desk: Desk, turn: Turn, person: Person) -> None:
    """`/approve ID` and `/deny ID`."""
    await desk.access.vote_command(turn.event, person.name, turn.verb, turn.args)


async def oncall(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.post(turn.event, await desk.oncall.oncall_message())


async def handover(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.post(turn.event, await desk.oncall.handover_message(person.name))


async def heartbeats(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.post(turn.event, await desk.heartbeats.chat_message())


async def unknown_verb(desk: Desk, turn: Turn, person: Person) -> None:
    await desk.say(turn.event, f"Unknown command /{turn.verb}. /help lists what I understand.")


VERBS: Mapping[str, Verb] = MappingProxyType(
    {
        "help": help_,
        "start": help_,  # what Telegram sends when a person first opens the bot
        "ack": incident_action,
        "resolve": incident_action,
        "snooze": incident_action,
        "note": note,
        "incidents": incidents,
        "run": run,
        "hosts": hosts,
        "cancel": cancel,
        "history": history,
        "otp": otp,
        "approve": vote,
        "deny": vote,
        "oncall": oncall,
        "handover": handover,
        "heartbeats": heartbeats,
    }
)
