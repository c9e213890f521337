"""What the notifier reads and rewrites inside an incident's transaction: the incident as its message shows it, the
messages that announced it (to edit them), and a storm summary (to count more incidents in it and edit it).
Rows are queued with `store.outbox_queue.enqueue_*` in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from teleops.store.outbox_queue import OutboxKind, OutboxStatus
from teleops.store.schema import incidents, outbox

__all__ = ["StormSummary", "incident_messages", "incident_snapshot", "replace_payload", "storm_summary"]


@dataclass(frozen=True, slots=True)
class StormSummary:
    """A storm summary message's outbox row: its delivery state and what it counts (`payload["counts"]`)."""

    id: int
    status: str
    payload: dict[str, Any]


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


def storm_summary(conn: Connection, row_id: int, *, platform: str, chat_id: str, purpose: str) -> StormSummary | None:
    """Row `row_id` if it is a storm summary (`purpose`) of that chat, sent or not; None otherwise (e.g. the
    transaction that queued it rolled back, and the id now names another row or none)."""
    row = conn.execute(
        select(outbox.c.id, outbox.c.status, outbox.c.payload).where(
            outbox.c.id == row_id,
            outbox.c.platform == platform,
            outbox.c.chat_id == chat_id,
            outbox.c.purpose == purpose,
            outbox.c.kind == OutboxKind.SEND.value,
        )
    ).first()
    return StormSummary(int(row.id), str(row.status), dict(row.payload)) if row is not None else None


def replace_payload(conn: Connection, row_id: int, payload: dict[str, Any], *, if_pending: bool = False) -> bool:
    """Rewrite what row `row_id` carries (a message not sent yet goes with it; a sent one keeps it as a record).

    `if_pending`: only while nobody has claimed it for delivery (the claim then reads the new payload); returns
    whether the row was rewritten."""
    query = update(outbox).where(outbox.c.id == row_id)
    if if_pending:
        query = query.where(outbox.c.status == OutboxStatus.PENDING.value)
    return bool(conn.execute(query.values(payload=payload)).rowcount == 1)


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
