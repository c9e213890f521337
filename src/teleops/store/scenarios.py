"""Reading past scenarios for scenario memory: earlier incidents like this one, and what was done in them.

Every query is bounded and indexed (ARCHITECTURE §8): earlier incidents by `(source, fingerprint, id)`,
`(name, host)` or `(name, id)`, newest first with a LIMIT; their commands by `incident_id`; their notes by
`(incident_id, id)`. Nothing here scans all incidents. The functions take a Connection so that the notifier
can call them inside the ingest transaction (see `in_savepoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from teleops.domain.incident import TimelineKind
from teleops.store.schema import commands, incidents, timeline

__all__ = [
    "ScenarioCommand",
    "ScenarioNote",
    "ScenarioRow",
    "command_row",
    "commands_of",
    "in_savepoint",
    "notes_of",
    "same_fingerprint",
    "same_name",
    "same_name_host",
    "scenario_row",
    "scenarios_named",
]

T = TypeVar("T")
OUTPUT_TAIL_CHARS = 2000


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    id: int
    source: str
    fingerprint: str
    name: str
    host: str | None
    status: str
    summary: str
    created_at: datetime
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    predecessor_id: int | None


@dataclass(frozen=True, slots=True)
class ScenarioCommand:
    id: int
    incident_id: int
    requester: str
    host: str
    argv: list[str]
    status: str
    exit_code: int | None
    output_tail: str  # the last OUTPUT_TAIL_CHARS characters of the (already redacted) output
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScenarioNote:
    incident_id: int
    at: datetime
    actor: str | None
    text: str


_ROW_COLUMNS = (
    incidents.c.id,
    incidents.c.source,
    incidents.c.fingerprint,
    incidents.c.name,
    incidents.c.host,
    incidents.c.status,
    incidents.c.summary,
    incidents.c.created_at,
    incidents.c.acknowledged_by,
    incidents.c.resolved_at,
    incidents.c.resolved_by,
    incidents.c.predecessor_id,
)


def _rows(conn: Connection, where: Any, limit: int) -> list[ScenarioRow]:
    query = select(*_ROW_COLUMNS).where(where).order_by(incidents.c.id.desc()).limit(limit)
    return [ScenarioRow(**dict(r._mapping)) for r in conn.execute(query)]


def scenario_row(conn: Connection, incident_id: int) -> ScenarioRow | None:
    """One incident as a scenario row, or None if it does not exist."""
    found = _rows(conn, incidents.c.id == incident_id, 1)
    return found[0] if found else None


def same_fingerprint(
    conn: Connection, source: str, fingerprint: str, *, before_id: int, limit: int
) -> list[ScenarioRow]:
    """Earlier incidents of the same `(source, fingerprint)` — the predecessor chain — newest first."""
    where = and_(incidents.c.source == source, incidents.c.fingerprint == fingerprint, incidents.c.id < before_id)
    return _rows(conn, where, limit)


def same_name_host(conn: Connection, name: str, host: str, *, before_id: int, limit: int) -> list[ScenarioRow]:
    """Earlier incidents with the same alert name on the same host, newest first."""
    where = and_(incidents.c.name == name, incidents.c.host == host, incidents.c.id < before_id)
    return _rows(conn, where, limit)


def same_name(conn: Connection, name: str, *, before_id: int, limit: int) -> list[ScenarioRow]:
    """Earlier incidents with the same alert name on any host, newest first (callers filter the host)."""
    return _rows(conn, and_(incidents.c.name == name, incidents.c.id < before_id), limit)


def scenarios_named(conn: Connection, name: str, *, limit: int) -> list[ScenarioRow]:
    """The newest `limit` incidents with this alert name, resolved or not."""
    return _rows(conn, incidents.c.name == name, limit)


def commands_of(conn: Connection, incident_ids: Sequence[int]) -> dict[int, list[ScenarioCommand]]:
    """The commands run on each incident, oldest first (by `ix_commands_incident_id`)."""
    if not incident_ids:
        return {}
    query = (
        select(
            commands.c.id,
            commands.c.incident_id,
            commands.c.requester,
            commands.c.host,
            commands.c.argv,
            commands.c.status,
            commands.c.exit_code,
            commands.c.output,
            commands.c.created_at,
            commands.c.finished_at,
        )
        .where(commands.c.incident_id.in_(list(incident_ids)))
        .order_by(commands.c.id)
    )
    found: dict[int, list[ScenarioCommand]] = {i: [] for i in incident_ids}
    for r in conn.execute(query):
        found[r.incident_id].append(_command(r))
    return found


def command_row(conn: Connection, command_id: int) -> ScenarioCommand | None:
    """One command with its incident, or None (no such command, or it belongs to no incident)."""
    r = conn.execute(
        select(
            commands.c.id,
            commands.c.incident_id,
            commands.c.requester,
            commands.c.host,
            commands.c.argv,
            commands.c.status,
            commands.c.exit_code,
            commands.c.output,
            commands.c.created_at,
            commands.c.finished_at,
        ).where(commands.c.id == command_id)
    ).first()
    if r is None or r.incident_id is None:
        return None
    return _command(r)


def _command(r: Any) -> ScenarioCommand:
    return ScenarioCommand(
        id=r.id,
        incident_id=r.incident_id,
        requester=r.requester,
        host=r.host,
        argv=[str(a) for a in r.argv],
        status=r.status,
        exit_code=r.exit_code,
        output_tail=(r.output or "")[-OUTPUT_TAIL_CHARS:],
        created_at=r.created_at,
        finished_at=r.finished_at,
    )


def notes_of(conn: Connection, incident_ids: Sequence[int]) -> dict[int, list[ScenarioNote]]:
    """People's notes on each incident, oldest first (by `ix_timeline_events_incident_id_id`)."""
    if not incident_ids:
        return {}
    query = (
        select(timeline.c.incident_id, timeline.c.at, timeline.c.actor, timeline.c.data)
        .where(timeline.c.incident_id.in_(list(incident_ids)), timeline.c.kind == TimelineKind.NOTE.value)
        .order_by(timeline.c.incident_id, timeline.c.id)
    )
    found: dict[int, list[ScenarioNote]] = {i: [] for i in incident_ids}
    for r in conn.execute(query):
        text = r.data.get("text") if isinstance(r.data, dict) else None
        if text:
            found[r.incident_id].append(ScenarioNote(r.incident_id, r.at, r.actor, str(text)))
    return found


def in_savepoint(conn: Connection, fn: Callable[[Connection], T]) -> T | None:
    """Run `fn(conn)` in a SAVEPOINT; on a database error roll back to it and return None.

    For optional reads inside someone else's transaction (the ingest batch): on PostgreSQL a failed
    statement would otherwise abort the whole transaction, and with it the alerts being stored.
    """
    savepoint = conn.begin_nested()
    try:
        result = fn(conn)
    except BaseException as exc:
        savepoint.rollback()
        if isinstance(exc, SQLAlchemyError):
            return None
        raise
    savepoint.commit()
    return result
