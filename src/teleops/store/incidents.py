"""Reading incidents with their timelines, and the human actions on them (ack, resolve, snooze)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row

from teleops.domain.incident import (
    IncidentAction,
    IncidentNotFound,
    IncidentRecord,
    IncidentStatus,
    TimelineEvent,
    TimelineKind,
    next_status,
)
from teleops.store.database import Database
from teleops.store.incident_events import IncidentEvents
from teleops.store.schema import incidents, timeline

__all__ = [
    "act_on_incident",
    "add_note",
    "add_timeline_event",
    "count_open",
    "get_incident",
    "list_incidents",
]


_COLUMNS = [c for c in incidents.c if c.name not in ("digest",)]


def _record(row: Row[Any], events: tuple[TimelineEvent, ...] = ()) -> IncidentRecord:
    values = dict(row._mapping)
    return IncidentRecord(**values, timeline=events)


async def list_incidents(
    db: Database, *, status: IncidentStatus | None = None, limit: int = 100, before_id: int | None = None
) -> list[IncidentRecord]:
    """Newest first. `before_id` pages backwards."""
    query = select(*_COLUMNS).order_by(incidents.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(incidents.c.status == status.value)
    if before_id is not None:
        query = query.where(incidents.c.id < before_id)
    rows = await db.all(query)
    return [_record(row) for row in rows]


async def count_open(db: Database) -> int:
    """Raises StorageUnavailable when the database does not answer."""
    value = await db.scalar(select(func.count()).select_from(incidents).where(incidents.c.resolved_at.is_(None)))
    return int(value or 0)


async def get_incident(db: Database, incident_id: int) -> IncidentRecord:
    """The incident with its whole timeline, oldest event first. Raises IncidentNotFound."""

    def read(conn: Connection) -> IncidentRecord:
        row = conn.execute(select(*_COLUMNS).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise IncidentNotFound(incident_id)
        events = conn.execute(
            select(timeline.c.id, timeline.c.at, timeline.c.kind, timeline.c.actor, timeline.c.data)
            .where(timeline.c.incident_id == incident_id)
            .order_by(timeline.c.id)
        ).all()
        return _record(row, tuple(TimelineEvent(e.id, e.at, e.kind, e.actor, e.data) for e in events))

    return await db.read(read)


_ACTION_EVENTS = {
    IncidentAction.ACK: TimelineKind.ACKNOWLEDGED,
    IncidentAction.RESOLVE: TimelineKind.RESOLVED,
    IncidentAction.SNOOZE: TimelineKind.SNOOZED,
    IncidentAction.UNSNOOZE: TimelineKind.UNSNOOZED,
}


async def act_on_incident(
    db: Database,
    incident_id: int,
    action: IncidentAction,
    *,
    actor: str,
    now: datetime,
    snooze_until: datetime | None = None,
    via: str = "api",
    events: IncidentEvents,
) -> tuple[IncidentRecord, bool]:
    """Apply a person's action. Returns (incident, changed); acking an acked incident changes nothing.

    When something changed, `events` hears of it inside the transaction (the chat notifier enqueues its edits
    there, the escalation and silences note it) and after the commit (to wake their workers).

    Raises IncidentNotFound, or InvalidTransition (e.g. resolving a resolved incident).
    """

    def apply(conn: Connection) -> bool:
        row = conn.execute(select(incidents.c.status).where(incidents.c.id == incident_id).with_for_update()).first()
        if row is None:
            raise IncidentNotFound(incident_id)
        status = IncidentStatus(row.status)
        if action is IncidentAction.ACK and status is IncidentStatus.ACKNOWLEDGED:
            return False
        new_status = next_status(status, action)
        values: dict[str, Any] = {"status": new_status.value}
        data: dict[str, Any] = {"via": via}
        if action is IncidentAction.ACK:
            values.update(acknowledged_at=now, acknowledged_by=actor, snoozed_until=None)
        elif action is IncidentAction.RESOLVE:
            values.update(resolved_at=now, resolved_by=actor, snoozed_until=None)
        elif action is IncidentAction.SNOOZE:
            values.update(snoozed_until=snooze_until)
            data["until"] = snooze_until.isoformat() if snooze_until else None
        else:
            values.update(snoozed_until=None)
        conn.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
        conn.execute(
            insert(timeline).values(
                incident_id=incident_id, at=now, kind=_ACTION_EVENTS[action].value, actor=actor, data=data
            )
        )
        events.action_in_transaction(conn, incident_id, action, actor, now, snooze_until)
        return True

    changed = await db.run_in_transaction(apply)
    if changed:
        events.action_committed()
    return await get_incident(db, incident_id), changed


async def add_note(db: Database, incident_id: int, *, actor: str, text: str, now: datetime, via: str) -> None:
    """Append a person's note to the incident's timeline. Raises IncidentNotFound."""

    def apply(conn: Connection) -> None:
        if conn.execute(select(incidents.c.id).where(incidents.c.id == incident_id)).first() is None:
            raise IncidentNotFound(incident_id)
        conn.execute(
            insert(timeline).values(
                incident_id=incident_id,
                at=now,
                kind=TimelineKind.NOTE.value,
                actor=actor,
                data={"text": text, "via": via},
            )
        )

    await db.run_in_transaction(apply)


async def add_timeline_event(
    db: Database, incident_id: int, *, kind: str, actor: str | None, data: dict[str, Any], now: datetime
) -> None:
    """Append an event that changes nothing else (e.g. a write-back to the sender). Raises IncidentNotFound."""

    def apply(conn: Connection) -> None:
        if conn.execute(select(incidents.c.id).where(incidents.c.id == incident_id)).first() is None:
            raise IncidentNotFound(incident_id)
        conn.execute(insert(timeline).values(incident_id=incident_id, at=now, kind=kind, actor=actor, data=data))

    await db.run_in_transaction(apply)
