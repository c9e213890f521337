"""The handover digest and the "who is on call" answer, as platform-neutral chat messages."""

from __future__ import annotations

import shlex
from datetime import datetime

from teleops.domain.message import Message
from teleops.oncall.directory import OnCallNow
from teleops.store.handover import HandoverFacts, IncidentFacts

__all__ = ["digest_message", "oncall_message"]


def _when(at: datetime) -> str:
    return at.strftime("%a %d %b %H:%M UTC")


def _incident_lines(item: IncidentFacts) -> list[str]:
    head = f"#{item.id} {item.name} on {item.host or '?'} [{item.severity}] — {item.status}"
    if item.acknowledged_by:
        head += f" (acked by {item.acknowledged_by})"
    if item.predecessor_id:
        head += f" — came back (previous #{item.predecessor_id})"
    lines = [head]
    for command in item.commands:
        code = "" if command.exit_code is None else f" exit {command.exit_code}"
        lines.append(f"    $ {shlex.join(command.argv)}  — {command.requester}, {command.status}{code}")
    lines.extend(f"    note ({actor}): {text}" for actor, text in item.notes)
    if not item.commands and not item.notes:
        lines.append("    nothing tried yet")
    return lines


def digest_message(facts: HandoverFacts, *, incoming: str | None, since: datetime, now: datetime) -> Message:
    """The digest the incoming engineer reads first: open incidents with what was tried, and recurrences."""
    lines = [f"Shift {_when(since)} → {_when(now)}: {facts.resolved_count} resolved, {len(facts.open)} still open."]
    if facts.open:
        lines.append("")
        lines.append("Open:")
        for item in facts.open:
            lines.extend(_incident_lines(item))
    if facts.recurred:
        lines.append("")
        lines.append("Came back during the shift:")
        for item in facts.recurred:
            lines.extend(_incident_lines(item))
    title = f"Handover to {incoming}" if incoming else "Handover"
    return Message(title=title, body="\n".join(lines))


def oncall_message(rows: list[OnCallNow]) -> Message:
    """`/oncall`: who is on call now and next, per rotation."""
    if not rows:
        return Message(title="On call", body="No rotations are configured (oncall: rotations in teleops.yaml).")
    lines = []
    for row in rows:
        cover = " (override)" if row.overridden else ""
        lines.append(f"{row.rotation}: {row.current}{cover} until {_when(row.until)}, then {row.next}")
    return Message(title="On call", body="\n".join(lines))
