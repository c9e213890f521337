"""Postmortem export: one incident as a Markdown timeline — times, actors, commands, outputs, notes.

Everything in it came from alerts, people and command output, so it is escaped for Markdown: table cells
lose `|` and line breaks, and code fences are longer than any run of backticks inside them.

Exported for a reader (`access`), a command they may not read (teleops.commands.read_access) keeps its place,
who ran it, where and how it ended, but not its command line or output: the export says it was withheld and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from teleops.commands.read_access import ReadAccess
from teleops.domain.incident import TIMELINE_TITLES, IncidentRecord, TimelineEvent
from teleops.memory.last_time import WITHHELD_COMMAND, human_duration
from teleops.store.database import Database
from teleops.store.incidents import get_incident
from teleops.store.scenarios import ScenarioCommand, commands_of

__all__ = ["export_incident", "incident_markdown"]

_TITLES = TIMELINE_TITLES


def _cell(value: object) -> str:
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def _at(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else "—"


def _what(event: TimelineEvent) -> str:
    data: dict[str, Any] = event.data
    title = _TITLES.get(event.kind, event.kind)
    if "withheld" in data:
        return f"{title} on {_cell(data.get('host') or '?')}: {WITHHELD_COMMAND} ({_cell(data['withheld'])})"
    argv = data.get("argv")
    if isinstance(argv, list):
        command = " ".join(str(a) for a in argv)
        result = ""
        if event.kind == "command.finished":
            status = data.get("status")
            code = data.get("exit_code")
            result = f" → {status}" + (f", exit {code}" if code is not None else "")
            if isinstance(data.get("duration_s"), int | float):
                result += f", {data['duration_s']:.1f} s"
        return f"{title}: `{_cell(command)}` on {_cell(data.get('host') or '?')}{result}"
    if event.kind == "note":
        return f"{title}: {_cell(data.get('text', ''))}"
    if event.kind == "incident.snoozed" and data.get("until"):
        return f"{title} until {_cell(data['until'])}"
    if event.kind == "alert.fired" and data.get("predecessor_id"):
        return f"{title} (again; previous occurrence #{data['predecessor_id']})"
    return title


def incident_markdown(
    incident: IncidentRecord, commands: Sequence[ScenarioCommand], withheld: Mapping[int, str] | None = None
) -> str:
    """The postmortem-ready Markdown of one incident. `withheld`: ids of commands to show without their command
    line and output, with why (the incident's timeline is expected to be withheld the same way already)."""
    withheld = withheld or {}
    lines = [f"# #{incident.id} {_cell(incident.name)} on {_cell(incident.host or 'unknown host')}", ""]
    took = incident.resolved_at - incident.created_at if incident.resolved_at else None
    facts = [
        ("Severity", incident.severity),
        ("Status", incident.status),
        ("Source", f"{incident.source} (fingerprint {incident.fingerprint})"),
        ("Opened", _at(incident.created_at)),
        (
            "Acknowledged",
            f"{_at(incident.acknowledged_at)} by {incident.acknowledged_by}" if incident.acknowledged_by else "—",
        ),
        ("Resolved", f"{_at(incident.resolved_at)} by {incident.resolved_by}" if incident.resolved_at else "not yet"),
        ("Time to resolve", human_duration(took) if took is not None else "—"),
        ("Deliveries", str(incident.count)),
        ("Previous occurrence", f"#{incident.predecessor_id}" if incident.predecessor_id else "none"),
    ]
    lines += [f"- **{name}:** {_cell(value)}" for name, value in facts]
    if incident.summary:
        lines += ["", "## Summary", "", _cell(incident.summary)]
    if incident.description:
        lines += ["", _cell(incident.description)]
    lines += ["", "## Timeline", "", "| Time (UTC) | Actor | What happened |", "| --- | --- | --- |"]
    for event in incident.timeline:
        actor = _cell(event.actor or "")
        lines.append(f"| {event.at:%Y-%m-%d %H:%M:%S} | {actor} | {_what(event)} |")
    if commands:
        lines += ["", "## Commands and output"]
        for c in commands:
            code = f"exit {c.exit_code}" if c.exit_code is not None else c.status
            if c.id in withheld:
                lines += [
                    "",
                    f"### {_at(c.created_at)} · {_cell(c.requester)} on {_cell(c.host)}: {WITHHELD_COMMAND}",
                    "",
                    f"Result: {c.status}, {code}; finished {_at(c.finished_at)}. {_cell(withheld[c.id])}.",
                ]
                continue
            lines += [
                "",
                f"### {_at(c.created_at)} · {_cell(c.requester)} on {_cell(c.host)}: `{_cell(' '.join(c.argv))}`",
                "",
                f"Result: {c.status}, {code}; finished {_at(c.finished_at)}.",
                "",
                _fence(c.output_tail or "(no output)"),
            ]
    notes = [e for e in incident.timeline if e.kind == "note"]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {e.at:%Y-%m-%d %H:%M} {_cell(e.actor or '')}: {_cell(e.data.get('text', ''))}" for e in notes]
    return "\n".join(lines) + "\n"


async def export_incident(db: Database, incident_id: int, *, access: ReadAccess | None = None) -> str:
    """The Markdown export of `incident_id`, for `access`'s reader (None: everything, for the CLI on the
    controller's host). Raises IncidentNotFound."""
    incident = await get_incident(db, incident_id)
    commands = (await db.run_in_transaction(lambda conn: commands_of(conn, [incident_id]))).get(incident_id, [])
    withheld: dict[int, str] = {}
    if access is not None:
        incident = await access.incident(incident)
        decisions = await access.decide_ids(c.id for c in commands)
        withheld = {i: d.reason for i, d in decisions.items() if not d.allowed}
    return incident_markdown(incident, commands, withheld)
