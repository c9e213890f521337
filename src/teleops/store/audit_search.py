"""Reading the audit log for people: newest first, filtered by actor, action and free text, a page at a time.

The web UI's audit page (routes/ui_audit.py) uses it. Paging is by seq ("older than record N"), not by offset,
so a page stays the same while new records arrive and a deep page costs no more than the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.engine import Connection

from teleops.store.audit import AuditEvent, audit_events
from teleops.store.database import Database

__all__ = ["AuditPage", "AuditQuery", "search_audit"]


@dataclass(frozen=True, slots=True)
class AuditQuery:
    actor: str = ""  # exact user name (case-insensitive)
    action: str = ""  # an action, or a prefix ending in "." ("login." → login.succeeded, login.failed)
    text: str = ""  # anywhere in the subject or the data
    before: int | None = None  # only records older than this seq (the next page)
    limit: int = 50


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: Sequence[AuditEvent]
    older: int | None  # `before` for the next (older) page, None on the last page


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_audit(db: Database, query: AuditQuery) -> AuditPage:
    """One page of matching records, newest first. Raises StorageUnavailable."""
    table = audit_events
    statement = select(table).order_by(table.c.seq.desc()).limit(query.limit + 1)
    if query.actor:
        statement = statement.where(func.lower(table.c.actor) == query.actor.lower())
    if query.action:
        action = query.action.lower()
        if action.endswith("."):
            statement = statement.where(table.c.action.like(_like(action)[1:], escape="\\"))
        else:
            statement = statement.where(table.c.action == action)
    if query.text:
        pattern = _like(query.text)
        statement = statement.where(
            or_(
                func.lower(table.c.subject).like(pattern, escape="\\"),
                func.lower(cast(table.c.data, String)).like(pattern, escape="\\"),
            )
        )
    if query.before is not None:
        statement = statement.where(table.c.seq < query.before)

    def read(conn: Connection) -> AuditPage:
        rows = conn.execute(statement).all()
        events = [
            AuditEvent(int(r.seq), r.at, r.actor, r.action, r.subject, r.data, r.prev_hash, r.hash)
            for r in rows[: query.limit]
        ]
        older = events[-1].seq if len(rows) > query.limit else None
        return AuditPage(events, older)

    return await db.run_in_transaction(read)
