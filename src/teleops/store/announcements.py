"""What the notifier reads and rewrites inside an incident's transaction: the incident as its message shows it, the
messages that announced it (to edit them), and a chat's pending storm summary (to fold more incidents into it).
Rows are queued with `store.outbox.enqueue_*` in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from teleops.store.outbox import OutboxKind, OutboxStatus
from teleops.store.schema import incidents, outbox

__all__ = ["incident_messages", "incident_snapshot", "pending_storm_row", "replace_payload"]


def incident_messages(conn: Connection, incident_id: int) -> list[tuple[int, str, str]]:
    """(row id, platform, chat id) of each announcement of `incident_id` (the messages that get edited)."""
    rows = conn.execute(
        select(outbox.c.id, outbox.c.platform, outbox.c.chat_id).where(
            outbox.c.incident_id == incident_id,
            outbox.c.purpose == "incident",
            outbox.c.kind == OutboxKind.SEND.value,
        )
    ).all()
    return [(r.id, r.platform, r.chat_id) for r in rows]


def pending_storm_row(conn: Connection, platform: str, chat_id: str) -> tuple[int, dict[str, Any]] | None:
    """The not-yet-sent storm summary of a chat, to fold more incidents into it."""
    row = conn.execute(
        select(outbox.c.id, outbox.c.payload).where(
            outbox.c.platform == platform,
            outbox.c.chat_id == chat_id,
            outbox.c.purpose == "storm",
            outbox.c.status == OutboxStatus.PENDING.value,
        )
    ).first()
    return (int(row.id), dict(row.payload)) if row is not None else None


def replace_payload(conn: Connection, row_id: int, payload: dict[str, Any]) -> None:
    conn.execute(update(outbox).where(outbox.c.id == row_id).values(payload=payload))


def incident_snapshot(conn: Connection, incident_id: int) -> dict[str, Any] | None:
    """The fields an announcement shows, read inside the caller's transaction."""
    row = conn.execute(_SNAPSHOT, {"incident_id": incident_id}).first()
    return dict(row._mapping) if row is not None else None


_SNAPSHOT = select(
    incidents.c.id,
    incidents.c.name,
    incidents.c.severity,
    incidents.c.host,
    incidents.c.summary,
    incidents.c.labels,
    incidents.c.annotations,
    incidents.c.url,
    incidents.c.status,
).where(incidents.c.id == bindparam("incident_id"))
