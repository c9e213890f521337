"""The "last time" block: how often this fired, what was done last time, by whom, and whether it worked.

Pure: turns a `Recurrence` into chat lines (plain text; the renderer escapes them) and into the JSON the
REST API and the web UI show. All text from alerts, commands and notes is untrusted and stays plain.

`withheld` maps the ids of commands the reader may not read to why (teleops.commands.read_access): such a
command still counts and shows who ran it and whether it worked, never its command line or output, and it is
never offered to run again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from teleops.domain.message import Quote
from teleops.memory.recurrence import Recurrence, Scenario, Tier
from teleops.store.scenarios import ScenarioCommand

__all__ = [
    "EXCERPT_CHARS",
    "WITHHELD_COMMAND",
    "excerpt",
    "human_duration",
    "last_time_lines",
    "last_time_quotes",
    "last_time_view",
    "ordinal",
]

EXCERPT_CHARS = 80
MAX_COMMAND_LINES = 5
WITHHELD_COMMAND = "[command not shown to you]"
_NONE: Mapping[int, str] = {}


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, …, 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def human_duration(delta: timedelta) -> str:
    """`45s`, `14m`, `2h 5m`, `3d 4h`: two units at most."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def excerpt(output: str, limit: int = EXCERPT_CHARS) -> str:
    """The last non-empty output line, clipped to `limit` characters ("" for no output)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= limit else last[: limit - 1] + "…"


def _who(actor: str | None) -> str | None:
    if actor is None or actor.startswith("source:"):
        return None
    return actor.removeprefix("user:")


def handlers(scenario: Scenario) -> list[str]:
    """Who worked on it: whoever acknowledged, ran commands or resolved it (people, not alert senders)."""
    names: list[str] = []
    for actor in (
        scenario.row.acknowledged_by,
        *(c.requester for c in scenario.commands),
        *(n.actor for n in scenario.notes),
        scenario.row.resolved_by,
    ):
        who = _who(actor)
        if who and who not in names:
            names.append(who)
    return names


def _command_line(command: ScenarioCommand, withheld: Mapping[int, str]) -> str:
    mark = "✔" if command.exit_code == 0 else "✘"
    result = f"exit {command.exit_code}" if command.exit_code is not None else command.status
    if command.id in withheld:
        return f"{mark} {command.requester}: {WITHHELD_COMMAND} on {command.host} → {result}"
    text = f"{mark} {command.requester}: {' '.join(command.argv)} → {result}"
    tail = excerpt(command.output_tail)
    return f"{text} · {tail}" if tail else text


def _resolution(scenario: Scenario) -> str:
    row = scenario.row
    if row.resolved_at is None:
        return f"still {row.status}"
    by = _who(row.resolved_by)
    how = f"resolved by {by}" if by else "resolved by the alert sender"
    took = scenario.time_to_resolve
    return f"{how} after {human_duration(took)}" if took is not None else how


def last_time_lines(recurrence: Recurrence, *, now: datetime, withheld: Mapping[int, str] = _NONE) -> list[str]:
    """The block for a chat notification; empty when there is no earlier scenario."""
    last = recurrence.last
    if last is None:
        return []
    days = human_duration(recurrence.windows.lookback)
    plus = "+" if recurrence.times_capped else ""
    where = {
        Tier.SAME_FINGERPRINT: "",
        Tier.SAME_HOST: " (same alert on this host)",
        Tier.OTHER_HOST: f" (same alert on {last.row.host or 'another host'})",
    }[last.tier]
    lines = [f"🔁 {ordinal(recurrence.times)}{plus} time in {days}."]
    ago = human_duration(now - last.row.created_at)
    who = ", ".join(handlers(last)) or "nobody"
    lines.append(f"Last time: #{last.row.id}{where}, {ago} ago · handled by {who} · {_resolution(last)}.")
    if recurrence.fix_didnt_stick and last.row.resolved_at is not None:
        back = human_duration(recurrence.incident.created_at - last.row.resolved_at)
        lines.append(f"⚠️ Fix didn't stick: back {back} after #{last.row.id} was fixed.")
    for command in last.commands[:MAX_COMMAND_LINES]:
        lines.append(_command_line(command, withheld))
    if len(last.commands) > MAX_COMMAND_LINES:
        lines.append(f"… and {len(last.commands) - MAX_COMMAND_LINES} more commands (see #{last.row.id}).")
    for note in last.notes[-2:]:
        lines.append(f"📝 {_who(note.actor) or 'note'}: {excerpt(note.text, 200)}")
    best = recurrence.best_fix
    if best is not None and best.row.id != last.row.id:
        lines.append(_fix_line(best, withheld))
    return lines


def last_time_quotes(recurrence: Recurrence) -> list[Quote]:
    """The lines of `last_time_lines` (as shown to who may read everything) that quote commands, each with the
    line a reader who may not read them gets instead (Message.quotes: the console withholds them per reader).

    A command line quotes one command. "What fixed it" quotes up to three: a reader who may not read one of them
    gets the whole line withheld (it then names none), which withholds more than `/history` does, never less."""
    last = recurrence.last
    if last is None:
        return []
    quotes = [
        Quote((c.id,), _command_line(c, _NONE), _command_line(c, {c.id: ""})) for c in last.commands[:MAX_COMMAND_LINES]
    ]
    best = recurrence.best_fix
    if best is not None and best.row.id != last.row.id and best.fix_commands:
        every = {c.id: "" for c in best.fix_commands}
        named = tuple(c.id for c in best.fix_commands[:3])
        quotes.append(Quote(named, _fix_line(best, _NONE), _fix_line(best, every)))
    return quotes


def _fix_line(best: Scenario, withheld: Mapping[int, str]) -> str:
    shown = [c for c in best.fix_commands if c.id not in withheld]
    fix = "; ".join(" ".join(c.argv) for c in shown[:3]) if shown else WITHHELD_COMMAND
    return f"What fixed it on #{best.row.id}: {fix}."


def _command_view(command: ScenarioCommand, withheld: Mapping[int, str]) -> dict[str, Any]:
    """A withheld command has an empty `argv` and `output_excerpt`, and `withheld` says why (null otherwise)."""
    why = withheld.get(command.id)
    return {
        "id": command.id,
        "requester": command.requester,
        "host": command.host,
        "argv": [] if why is not None else command.argv,
        "status": command.status,
        "exit_code": command.exit_code,
        "output_excerpt": "" if why is not None else excerpt(command.output_tail, 300),
        "finished_at": command.finished_at.isoformat() if command.finished_at else None,
        "withheld": why,
    }


def _scenario_view(scenario: Scenario, window: timedelta, withheld: Mapping[int, str]) -> dict[str, Any]:
    row = scenario.row
    took = scenario.time_to_resolve
    return {
        "incident_id": row.id,
        "tier": scenario.tier.name.lower(),
        "name": row.name,
        "host": row.host,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
        "resolved_by": row.resolved_by,
        "time_to_resolve_s": took.total_seconds() if took is not None else None,
        "handled_by": handlers(scenario),
        "ended_in_fix": scenario.ended_in_fix,
        "fix_stuck": scenario.fix_stuck(window),
        "commands": [_command_view(c, withheld) for c in scenario.commands],
        "notes": [{"at": n.at.isoformat(), "actor": n.actor, "text": n.text} for n in scenario.notes],
    }


def last_time_view(recurrence: Recurrence, *, now: datetime, withheld: Mapping[int, str] = _NONE) -> dict[str, Any]:
    """The JSON of `GET /api/v1/incidents/{id}/history` (documented in docs/scenario-memory.md)."""
    window = recurrence.windows.fix_window
    last = recurrence.last
    return {
        "incident_id": recurrence.incident.id,
        "times": recurrence.times,
        "times_capped": recurrence.times_capped,
        "lookback_s": recurrence.windows.lookback.total_seconds(),
        "fix_didnt_stick": recurrence.fix_didnt_stick,
        "last": _scenario_view(last, window, withheld) if last is not None else None,
        "best_fix_incident_id": recurrence.best_fix.row.id if recurrence.best_fix else None,
        "run_again": [_command_view(c, withheld) for c in recurrence.run_again() if c.id not in withheld],
        "scenarios": [_scenario_view(s, window, withheld) for s in recurrence.scenarios],
        "text": last_time_lines(recurrence, now=now, withheld=withheld),
    }
