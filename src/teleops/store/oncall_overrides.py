"""On-call overrides made in the web UI: someone covers a rotation for a window, until it ends or is removed.

Overrides written in teleops.yaml stay in the config; these are the ones people add while on call. Removing one
keeps its row (`removed_at`, `removed_by`), and both the creation and the removal are audited in the same
transaction, so the audit log and the page agree on who was meant to cover when. The on-call directory
(oncall/directory.py) merges the live ones into every answer: paging, /oncall, handovers, the page and the feeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Table, insert, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.audit import append
from teleops.store.schema import Id, UTCDateTime, metadata

__all__ = ["StoredOverride", "add_override", "live_overrides", "oncall_overrides", "override_by_id", "remove_override"]

oncall_overrides = Table(
    "oncall_overrides",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("rotation", String(128), nullable=False),
    Column("user_name", String(64), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("removed_by", String(64)),
    Column("removed_at", UTCDateTime),
    Index("ix_oncall_overrides_ends_at", "ends_at"),
)


@dataclass(frozen=True, slots=True)
class StoredOverride:
    id: int
    rotation: str
    user: str
    start: datetime
    end: datetime
    created_by: str
    created_at: datetime

    def audit_data(self) -> dict[str, object]:
        return {
            "id": self.id,
            "rotation": self.rotation,
            "user": self.user,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
        }


def _override(row: Row[Any]) -> StoredOverride:
    return StoredOverride(
        id=int(row.id),
        rotation=row.rotation,
        user=row.user_name,
        start=row.starts_at,
        end=row.ends_at,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def add_override(
    conn: Connection, *, rotation: str, user: str, start: datetime, end: datetime, by: str, now: datetime
) -> StoredOverride:
    """Store an override and audit it as `oncall.override_created` (actor `by`) in the caller's transaction.

    The caller validates (rotation and user exist, `end` after `start`); raises ValueError only for an empty window.
    """
    if end <= start:
        raise ValueError("an override must end after it starts")
    new_id = conn.execute(
        insert(oncall_overrides)
        .values(rotation=rotation, user_name=user, starts_at=start, ends_at=end, created_by=by, created_at=now)
        .returning(oncall_overrides.c.id)
    ).scalar_one()
    stored = StoredOverride(int(new_id), rotation, user, start, end, by, now)
    append(
        conn,
        at=now,
        actor=by,
        action="oncall.override_created",
        subject=f"rotation:{rotation}",
        data=stored.audit_data(),
    )
    return stored


def remove_override(conn: Connection, override_id: int, *, by: str, now: datetime) -> StoredOverride | None:
    """Mark a live override removed and audit it as `oncall.override_removed`; None when there was none live."""
    found = override_by_id(conn, override_id)
    if found is None:
        return None
    result = conn.execute(
        update(oncall_overrides)
        .where(oncall_overrides.c.id == override_id, oncall_overrides.c.removed_at.is_(None))
        .values(removed_at=now, removed_by=by)
    )
    if not result.rowcount:
        return None  # removed meanwhile by someone else
    append(
        conn,
        at=now,
        actor=by,
        action="oncall.override_removed",
        subject=f"rotation:{found.rotation}",
        data=found.audit_data(),
    )
    return found


def override_by_id(conn: Connection, override_id: int) -> StoredOverride | None:
    """The live (not removed) override with this id."""
    row = conn.execute(
        select(oncall_overrides).where(oncall_overrides.c.id == override_id, oncall_overrides.c.removed_at.is_(None))
    ).first()
    return _override(row) if row is not None else None


def live_overrides(conn: Connection, *, ending_after: datetime) -> Sequence[StoredOverride]:
    """Overrides not removed that end after `ending_after`, newest first (a newer override wins where two overlap)."""
    rows = conn.execute(
        select(oncall_overrides)
        .where(oncall_overrides.c.removed_at.is_(None), oncall_overrides.c.ends_at > ending_after)
        .order_by(oncall_overrides.c.id.desc())
    ).all()
    return [_override(row) for row in rows]
