"""Pages as deliveries: one row per message that pages someone, with its state, deadline and reason.

All functions take a Connection and run inside the escalation worker's transaction, so a page, its outbox row and the
escalation step that caused it commit together. The state of a queued page is read from its outbox row
(`live_pages`): the outbox worker never writes here, so the delivery path stays as it was, and a page whose
outbox row was sent just before a crash is still found delivered afterwards.

Several replicas on one PostgreSQL: `live_pages` locks the queued pages it returns (`FOR UPDATE SKIP LOCKED`), so a
page is settled by one replica's pass, and its fallback (the next contact method, the next step) is queued once;
`settle_page` says whether it settled it, for the caller to act only then.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.engine import Connection

from teleops.store.schema import incidents, outbox, pages

__all__ = [
    "LivePage",
    "PageState",
    "incident_row",
    "live_pages",
    "next_deadline",
    "queued_counts",
    "record_page",
    "settle_page",
    "step_reached",
]


class PageState(enum.StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"  # a chat platform accepted it: as delivered as the platform can say
    SENT = "sent"  # handed over (a mail server, a webhook): no word on delivery after that
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LivePage:
    """A queued page with what its outbox row says now."""

    id: int
    incident_id: int
    escalation_id: int | None
    step: int
    round: int
    target: str
    user_name: str | None
    method: int
    platform: str
    chat_id: str
    deadline_at: datetime
    outbox_status: str
    outbox_error: str | None


def record_page(
    conn: Connection,
    *,
    incident_id: int,
    escalation_id: int | None,
    step: int,
    round_: int,
    target: str,
    user_name: str | None,
    method: int,
    platform: str,
    chat_id: str,
    outbox_id: int,
    now: datetime,
    deadline_at: datetime,
) -> int:
    result = conn.execute(
        insert(pages).values(
            incident_id=incident_id,
            escalation_id=escalation_id,
            step=step,
            round=round_,
            target=target,
            user_name=user_name,
            method=method,
            platform=platform,
            chat_id=chat_id,
            outbox_id=outbox_id,
            state=PageState.QUEUED.value,
            created_at=now,
            deadline_at=deadline_at,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def live_pages(conn: Connection, *, limit: int = 500) -> list[LivePage]:
    """Queued pages, oldest deadline first, each with its outbox row's status and last error. On PostgreSQL they are
    locked until the caller's transaction ends, skipping those another replica's pass holds."""
    query = (
        select(pages, outbox.c.status.label("outbox_status"), outbox.c.last_error.label("outbox_error"))
        .join(outbox, outbox.c.id == pages.c.outbox_id)
        .where(pages.c.state == PageState.QUEUED.value)
        .order_by(pages.c.deadline_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=pages)
    rows = conn.execute(query).mappings()
    return [
        LivePage(
            id=row["id"],
            incident_id=row["incident_id"],
            escalation_id=row["escalation_id"],
            step=row["step"],
            round=row["round"],
            target=row["target"],
            user_name=row["user_name"],
            method=row["method"],
            platform=row["platform"],
            chat_id=row["chat_id"],
            deadline_at=row["deadline_at"],
            outbox_status=row["outbox_status"],
            outbox_error=row["outbox_error"],
        )
        for row in rows
    ]


def settle_page(conn: Connection, page_id: int, state: PageState, reason: str | None, now: datetime) -> bool:
    """Settle a queued page; False when it was not queued any more (settled by another pass): do nothing for it."""
    result = conn.execute(
        update(pages)
        .where(pages.c.id == page_id, pages.c.state == PageState.QUEUED.value)
        .values(state=state.value, reason=reason, settled_at=now)
    )
    return int(result.rowcount) == 1


def step_reached(conn: Connection, incident_id: int, step: int, round_: int) -> bool:
    """Whether a page of this step run reached anyone (delivered or sent) or may still (queued)."""
    alive = (PageState.QUEUED.value, PageState.DELIVERED.value, PageState.SENT.value)
    query = select(
        exists().where(
            pages.c.incident_id == incident_id,
            pages.c.step == step,
            pages.c.round == round_,
            pages.c.state.in_(alive),
        )
    )
    return bool(conn.execute(query).scalar())


def next_deadline(conn: Connection) -> datetime | None:
    """The earliest deadline of a queued page (the escalation worker wakes for it)."""
    value: datetime | None = conn.execute(
        select(func.min(pages.c.deadline_at)).where(pages.c.state == PageState.QUEUED.value)
    ).scalar()
    return value


def queued_counts(conn: Connection) -> Mapping[str, tuple[int, datetime | None]]:
    """Per platform: queued pages and the oldest one's creation time (for the metrics)."""
    rows = conn.execute(
        select(pages.c.platform, func.count(), func.min(pages.c.created_at))
        .where(pages.c.state == PageState.QUEUED.value)
        .group_by(pages.c.platform)
    ).all()
    return {row[0]: (int(row[1]), row[2]) for row in rows}


def incident_row(conn: Connection, incident_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
    return dict(row) if row is not None else None
