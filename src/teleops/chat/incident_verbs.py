"""Acting on incidents from chat: `/ack`, `/resolve`, `/snooze`, `/note`, `/incidents`, and the Ack/Resolve/Snooze
buttons on an incident's message. Every change goes through `act_on_incident` (the same path as REST and the web
UI), for the person the checks identified.
"""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta

import structlog

from teleops.chat.desk import Desk
from teleops.chat.inbound import Person, Turn
from teleops.config.settings import parse_duration
from teleops.domain.incident import IncidentAction, IncidentNotFound, IncidentStatus, InvalidTransition
from teleops.store.audit import AuditUnavailable, record
from teleops.store.database import StorageUnavailable
from teleops.store.incidents import act_on_incident, add_note, list_incidents

__all__ = ["MAX_SNOOZE_S", "act", "incident_action", "incident_button", "incidents", "note"]

log = structlog.get_logger(__name__)

MAX_SNOOZE_S = 30 * 86400
_BUTTON = re.compile(r"^(ack|resolve|snooze):(\d{1,12})(?::(\d{1,4}[smhd]))?$")


async def act(
    desk: Desk, turn: Turn, person: Person, incident_id: int, action: IncidentAction, duration: str | None
) -> str:
    """Acknowledge, resolve or snooze (for `duration`, default 1h) incident `incident_id`; the answer to show."""
    event = turn.event
    now = desk.clock()
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
            desk.db,
            incident_id,
            action,
            actor=person.name,
            now=now,
            snooze_until=until,
            via=f"{event.platform}:{event.user_id}",
            events=desk.incident_events,
        )
    except IncidentNotFound:
        return f"Incident #{incident_id} does not exist; /incidents lists the open ones."
    except InvalidTransition as exc:
        return f"#{incident_id}: {exc}."
    verb = {"ack": "acknowledged", "resolve": "resolved", "snooze": "snoozed"}[action.value]
    return f"#{incident_id} {verb}." if changed else f"#{incident_id} was already {verb}."


async def incident_action(desk: Desk, turn: Turn, person: Person) -> None:
    """`/ack [ID]`, `/resolve [ID]`, `/snooze [ID] [DURATION]`: the id given, or the incident replied to."""
    event, command = turn.event, turn.verb
    words = turn.args.split()
    incident_id = await desk.target(event, words[0] if words and words[0].isdigit() else None)
    if incident_id is None:
        await desk.say(event, f"Which incident? Reply to its message with /{command}, or send /{command} ID.")
        return
    duration = next((w for w in words if not w.isdigit()), None)
    await desk.say(event, await act(desk, turn, person, incident_id, IncidentAction(command), duration))


async def note(desk: Desk, turn: Turn, person: Person) -> None:
    """`/note TEXT` in reply to an incident's message."""
    event, args = turn.event, turn.args
    incident_id = await desk.target(event, None)
    if incident_id is None or not args.strip():
        await desk.say(event, "Reply to an incident's message with /note TEXT.")
        return
    await add_note(
        desk.db, incident_id, actor=person.name, text=args.strip()[:4000], now=desk.clock(),
        via=f"{event.platform}:{event.user_id}",
    )  # fmt: skip
    await desk.say(event, f"Note added to #{incident_id}.")


async def incidents(desk: Desk, turn: Turn, person: Person) -> None:
    """`/incidents`: the open, acknowledged and snoozed ones, newest first."""
    rows = []
    for status in (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.SNOOZED):
        rows.extend(await list_incidents(desk.db, status=status, limit=20))
    if not rows:
        await desk.say(turn.event, "No open incidents.")
        return
    lines = [
        f"#{r.id} {r.severity} {r.name} on {r.host or '?'} — {r.status}" for r in sorted(rows, key=lambda r: -r.id)
    ]
    await desk.say(turn.event, "\n".join(lines[:30]))


async def incident_button(desk: Desk, turn: Turn, person: Person) -> None:
    """An Ack/Resolve/Snooze press. It acts only on the incident of the message it is on: forged callback data
    cannot reach another incident (issue #19.5); such a press is refused and audited."""
    event, replies = turn.event, desk.replies
    data = event.button_data or ""
    match = _BUTTON.match(data)
    if match is None:
        await replies.answer_button(event, "Unknown button.")
        return
    action, incident_id, duration = match.group(1), int(match.group(2)), match.group(3)
    pressed_on = await desk.outbox.find_message(event.platform, event.chat_id, event.message_id or "")
    if pressed_on is None or pressed_on.incident_id != incident_id:
        await _refuse_button(desk, turn, person, incident_id, None if pressed_on is None else pressed_on.incident_id)
        await replies.answer_button(event, "This button is not for this message's incident; nothing was done.")
        return
    await replies.answer_button(event, await act(desk, turn, person, incident_id, IncidentAction(action), duration))


async def _refuse_button(
    desk: Desk, turn: Turn, person: Person, incident_id: int, message_incident: int | None
) -> None:
    event = turn.event
    log.warning(
        "chat.button_refused",
        platform=event.platform,
        user=person.name,
        data=(event.button_data or "")[:64],
        message_incident=message_incident,
    )
    with contextlib.suppress(StorageUnavailable, AuditUnavailable):
        await record(
            desk.db,
            at=desk.clock(),
            actor=person.name,
            action="chat.button_refused",
            subject=f"incident:{incident_id}",
            data={
                "platform": event.platform,
                "chat_id": event.chat_id,
                "message_id": event.message_id,
                "button": (event.button_data or "")[:64],
                "message_incident": message_incident,
            },
        )
