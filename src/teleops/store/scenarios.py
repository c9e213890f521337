"""Reading past scenarios for scenario memory: earlier incidents like this one, and what was done in them.

Every query is bounded and indexed (docs/architecture.md, "Performance design"): earlier incidents by
`(source, fingerprint, id)`, `(name, host)` or `(name, id)`, newest first with a LIMIT; their commands by
`incident_id`; their notes by `(incident_id, id)`. Nothing here scans all incidents. The functions take a
Connection so that the notifier can call them inside the ingest transaction (see `in_savepoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, literal, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from teleops.domain.incident import TimelineKind
from teleops.store.schema import commands, incidents, timeline

__all__ = [
    "Earlier",
    "ScenarioCommand",
    "ScenarioNote",
    "ScenarioRow",
    "command_row",
    "commands_of",
    "count_recent",
    "earlier_scenarios",
    "in_savepoint",
    "notes_of",
    "outputs_of",
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


def _newest_first(where: Any) -> Any:
    return select(*_ROW_COLUMNS).where(where).order_by(incidents.c.id.desc()).limit(bindparam("limit"))


# Built once: on this path (the notifier, inside the ingest transaction) building a Core statement per call
# cost more than running it (the same finding as ingest's, bench B11).
_BEFORE = incidents.c.id < bindparam("before_id")
_NAMED = _newest_first(incidents.c.name == bindparam("name"))
_RECENT_IN_CHAIN = (
    select(literal(1))
    .where(
        incidents.c.source == bindparam("source"),
        incidents.c.fingerprint == bindparam("fingerprint"),
        _BEFORE,
        incidents.c.created_at >= bindparam("since", type_=incidents.c.created_at.type),
    )
    .order_by(incidents.c.id.desc())
    .limit(bindparam("cap"))
    .subquery()
)
_COUNT_RECENT = select(func.count()).select_from(_RECENT_IN_CHAIN)


def _rows(conn: Connection, statement: Any, **params: Any) -> list[ScenarioRow]:
    return [ScenarioRow(*r) for r in conn.execute(statement, params)]


def count_recent(conn: Connection, source: str, fingerprint: str, *, before_id: int, since: datetime, cap: int) -> int:
    """How many earlier incidents of `(source, fingerprint)` opened since `since`, counting at most `cap`."""
    params = {"source": source, "fingerprint": fingerprint, "before_id": before_id, "since": since, "cap": cap}
    return int(conn.execute(_COUNT_RECENT, params).scalar_one())


def _tier(tag: int, where: Any, limit: str) -> Any:
    newest = (
        select(literal(tag).label("tier"), *_ROW_COLUMNS)
        .where(where)
        .order_by(incidents.c.id.desc())
        .limit(bindparam(limit))
        .subquery()
    )
    return select(newest)


# The three tiers of earlier scenarios in one round trip (each part still an indexed newest-first lookup):
# on PostgreSQL every statement is a network round trip, and this lookup runs for each announced incident.
_SELF = incidents.alias("current")


def _of_self(column: str) -> Any:
    """The incident's own `column`, as a scalar subquery (evaluated once: its fields select the tiers)."""
    return select(_SELF.c[column]).where(_SELF.c.id == bindparam("before_id")).scalar_subquery()


# The incident and the three tiers of its earlier scenarios in one round trip (each tier still an indexed
# newest-first lookup): on PostgreSQL every statement is a network round trip, and this runs for each announcement.
_EARLIER = union_all(
    _tier(3, incidents.c.id == bindparam("before_id"), "self_limit"),
    _tier(
        0,
        and_(incidents.c.source == _of_self("source"), incidents.c.fingerprint == _of_self("fingerprint"), _BEFORE),
        "chain_limit",
    ),
    _tier(1, and_(incidents.c.name == _of_self("name"), incidents.c.host == _of_self("host"), _BEFORE), "host_limit"),
    _tier(2, and_(incidents.c.name == _of_self("name"), _BEFORE), "name_limit"),
)


@dataclass(frozen=True, slots=True)
class Earlier:
    """An incident and its earlier incidents, newest first in each list (see `earlier_scenarios`)."""

    incident: ScenarioRow
    same_fingerprint: list[ScenarioRow]
    same_name_host: list[ScenarioRow]  # may include rows of same_fingerprint: callers de-duplicate
    same_name: list[ScenarioRow]  # any host, the incident's own included: callers filter


def earlier_scenarios(
    conn: Connection, incident_id: int, *, chain_limit: int, host_limit: int, name_limit: int
) -> Earlier | None:
    """The incident with its `same_fingerprint`, `same_name_host` (none when it has no host: `host = NULL` matches
    nothing) and `same_name` tiers, in one query; None when the incident does not exist."""
    params = {
        "before_id": incident_id,
        "self_limit": 1,
        "chain_limit": chain_limit,
        "host_limit": host_limit,
        "name_limit": name_limit,
    }
    tiers: tuple[list[ScenarioRow], ...] = ([], [], [], [])
    for row in conn.execute(_EARLIER, params):
        tiers[row[0]].append(ScenarioRow(*row[1:]))
    if not tiers[3]:
        return None
    for rows in tiers:  # UNION ALL keeps no order across its parts: newest first again
        rows.sort(key=lambda r: r.id, reverse=True)
    return Earlier(tiers[3][0], tiers[0], tiers[1], tiers[2])


def scenarios_named(conn: Connection, name: str, *, limit: int) -> list[ScenarioRow]:
    """The newest `limit` incidents with this alert name, resolved or not."""
    return _rows(conn, _NAMED, name=name, limit=limit)


_COMMAND_FACTS = (
    commands.c.id,
    commands.c.incident_id,
    commands.c.requester,
    commands.c.host,
    commands.c.argv,
    commands.c.status,
    commands.c.exit_code,
    commands.c.created_at,
    commands.c.finished_at,
)
_COMMANDS_OF = (
    select(*_COMMAND_FACTS, commands.c.output)
    .where(commands.c.incident_id.in_(bindparam("ids", expanding=True)))
    .order_by(commands.c.id)
)
_FACTS_OF = (
    select(*_COMMAND_FACTS, literal("").label("output"))
    .where(commands.c.incident_id.in_(bindparam("ids", expanding=True)))
    .order_by(commands.c.id)
)
_OUTPUTS_OF = select(commands.c.id, commands.c.output).where(commands.c.id.in_(bindparam("ids", expanding=True)))


def commands_of(
    conn: Connection, incident_ids: Sequence[int], *, with_output: bool = True
) -> dict[int, list[ScenarioCommand]]:
    """The commands run on each incident, oldest first (by `ix_commands_incident_id`).

    `with_output=False` leaves `output_tail` empty (ranking needs no output; `outputs_of` fetches it for few).
    """
    if not incident_ids:
        return {}
    found: dict[int, list[ScenarioCommand]] = {i: [] for i in incident_ids}
    for r in conn.execute(_COMMANDS_OF if with_output else _FACTS_OF, {"ids": list(incident_ids)}):
        found[r.incident_id].append(_command(r))
    return found


def outputs_of(conn: Connection, command_ids: Sequence[int]) -> dict[int, str]:
    """The last OUTPUT_TAIL_CHARS characters of each command's output."""
    if not command_ids:
        return {}
    return {r.id: (r.output or "")[-OUTPUT_TAIL_CHARS:] for r in conn.execute(_OUTPUTS_OF, {"ids": list(command_ids)})}


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


_NOTES_OF = (
    select(timeline.c.incident_id, timeline.c.at, timeline.c.actor, timeline.c.data)
    .where(timeline.c.incident_id.in_(bindparam("ids", expanding=True)), timeline.c.kind == TimelineKind.NOTE.value)
    .order_by(timeline.c.incident_id, timeline.c.id)
)


def notes_of(conn: Connection, incident_ids: Sequence[int]) -> dict[int, list[ScenarioNote]]:
    """People's notes on each incident, oldest first (by `ix_timeline_events_incident_id_id`)."""
    if not incident_ids:
        return {}
    found: dict[int, list[ScenarioNote]] = {i: [] for i in incident_ids}
    for r in conn.execute(_NOTES_OF, {"ids": list(incident_ids)}):
        text = r.data.get("text") if isinstance(r.data, dict) else None
        if text:
            found[r.incident_id].append(ScenarioNote(r.incident_id, r.at, r.actor, str(text)))
    return found


def in_savepoint(conn: Connection, fn: Callable[[Connection], T]) -> T | None:
    """Run `fn(conn)` (reads only) so that a database error costs only its result: returns None on one.

    For optional reads inside someone else's transaction (the ingest batch): on PostgreSQL a failed
    statement would otherwise abort the whole transaction, and with it the alerts being stored, so `fn` runs
    in a SAVEPOINT rolled back on error. SQLite keeps a transaction usable after a failed read (the errors that
    roll it back, a full disk or an I/O error, would take a savepoint with it too), so there it saves the two
    statements of a savepoint on the ingest path.
    """
    if conn.dialect.name == "sqlite":
        try:
            return fn(conn)
        except SQLAlchemyError:
            return None
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
