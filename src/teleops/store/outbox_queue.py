"""The outbox queue: every outgoing chat message, edit and file is a row before any platform sees it. What a row
is (`OutboxRow`, its kind and status) and how it is queued (`enqueue_*`).

Rows move `pending -> sending -> sent`, or back to `pending` on a temporary failure, or to `failed`
when the platform refuses for good; a pending edit replaced by a newer one becomes `superseded`.
The `enqueue_*` functions take a Connection so callers write them in their own transaction (the
ingest writes notifications in the same transaction as the incident, invariant 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.schema import outbox

__all__ = [
    "LIVE_STATUSES",
    "ROW_COLUMNS",
    "Claim",
    "OutboxKind",
    "OutboxRow",
    "OutboxStatus",
    "enqueue_edit",
    "enqueue_file",
    "enqueue_send",
    "row_of",
]


class OutboxKind(enum.StrEnum):
    SEND = "send"  # a new message (a reply when ref_id is set)
    EDIT = "edit"  # replace the text of the message sent by row ref_id
    FILE = "file"  # a document (a reply when ref_id is set)


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


LIVE_STATUSES = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value)
_INSERT = insert(outbox).returning(outbox.c.id)


@dataclass(frozen=True, slots=True)
class Claim:
    """A row claimed for delivery: what to send, and the claim's epoch, which the outcome's write names."""

    payload: dict[str, Any]
    epoch: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    platform: str
    chat_id: str
    kind: str
    incident_id: int | None
    payload: dict[str, Any]
    status: str
    attempts: int
    ref_id: int | None
    purpose: str | None
    platform_message_id: str | None
    created_at: datetime
    # For EDIT and replies: the referenced row's delivery state (None when there is no reference).
    ref_status: str | None = None
    ref_message_id: str | None = None
    # The platform's retry_after deadline (429): nothing goes to this chat before it (this row is its head).
    blocked_until: datetime | None = None
    # The claim epoch the row had when read (a row taken by `take_heads`: its claim's epoch).
    claim_epoch: int = 0
    # Read by `heads` on PostgreSQL: the row is `sending` under another replica's lease that has not expired.
    claimed_elsewhere: bool = False


def enqueue_send(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    payload: dict[str, Any],
    now: datetime,
    incident_id: int | None = None,
    reply_to: int | None = None,
    purpose: str | None = None,
) -> int:
    """Queue a new message (`reply_to`: an outbox row id whose message this answers). Returns the row id."""
    return _insert_row(
        conn,
        platform=platform,
        chat_id=chat_id,
        kind=OutboxKind.SEND,
        payload=payload,
        now=now,
        incident_id=incident_id,
        ref_id=reply_to,
        purpose=purpose,
    )


def _insert_row(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    kind: OutboxKind,
    payload: dict[str, Any],
    now: datetime,
    incident_id: int | None,
    ref_id: int | None,
    purpose: str | None = None,
) -> int:
    values = {
        "platform": platform,
        "chat_id": chat_id,
        "kind": kind.value,
        "incident_id": incident_id,
        "payload": payload,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "ref_id": ref_id,
        "purpose": purpose,
    }
    return int(conn.execute(_INSERT, values).scalar_one())


def enqueue_file(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    filename: str,
    content: str,
    caption: dict[str, Any] | None,
    now: datetime,
    incident_id: int | None = None,
    reply_to: int | None = None,
) -> int:
    """Queue a document upload (UTF-8 text content, e.g. long command output). Returns the row id."""
    payload = {"file": {"name": filename, "text": content}, "message": caption}
    return _insert_row(
        conn,
        platform=platform,
        chat_id=chat_id,
        kind=OutboxKind.FILE,
        payload=payload,
        now=now,
        incident_id=incident_id,
        ref_id=reply_to,
    )


def enqueue_edit(conn: Connection, *, ref_id: int, payload: dict[str, Any], now: datetime) -> int | None:
    """Queue an edit of the message sent by row `ref_id`; a still-pending edit of it is replaced (coalesced).

    Returns the edit row id, or None when `ref_id` does not exist.
    """
    ref = conn.execute(
        select(outbox.c.platform, outbox.c.chat_id, outbox.c.incident_id).where(outbox.c.id == ref_id)
    ).first()
    if ref is None:
        return None
    pending = conn.execute(
        select(outbox.c.id)
        .where(
            outbox.c.ref_id == ref_id,
            outbox.c.kind == OutboxKind.EDIT.value,
            outbox.c.status == OutboxStatus.PENDING.value,
        )
        .order_by(outbox.c.id.desc())
        .limit(1)
    ).scalar()
    if pending is not None:
        # Only while it is still pending: a delivery that claimed it meanwhile sends what it claimed, so the newer
        # text needs an edit row of its own.
        coalesced = conn.execute(
            update(outbox)
            .where(outbox.c.id == pending, outbox.c.status == OutboxStatus.PENDING.value)
            .values(payload=payload)
        )
        if coalesced.rowcount == 1:
            return int(pending)
    return _insert_row(
        conn,
        platform=ref.platform,
        chat_id=ref.chat_id,
        kind=OutboxKind.EDIT,
        payload=payload,
        now=now,
        incident_id=ref.incident_id,
        ref_id=ref_id,
    )


def row_of(row: Row[Any, *tuple[Any, ...]]) -> OutboxRow:
    """An `outbox` row read with ROW_COLUMNS (and, from the heads reads, its reference's state) as an OutboxRow."""
    m = row._mapping
    return OutboxRow(
        id=m["id"],
        platform=m["platform"],
        chat_id=m["chat_id"],
        kind=m["kind"],
        incident_id=m["incident_id"],
        payload=m["payload"],
        status=m["status"],
        attempts=m["attempts"],
        ref_id=m["ref_id"],
        purpose=m["purpose"],
        platform_message_id=m["platform_message_id"],
        created_at=m["created_at"],
        ref_status=m.get("ref_status"),
        ref_message_id=m.get("ref_message_id"),
        blocked_until=m["blocked_until"],
        claim_epoch=m["claim_epoch"],
        claimed_elsewhere=bool(m.get("claimed_elsewhere")),
    )


ROW_COLUMNS = (
    outbox.c.id,
    outbox.c.platform,
    outbox.c.chat_id,
    outbox.c.kind,
    outbox.c.incident_id,
    outbox.c.payload,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.ref_id,
    outbox.c.purpose,
    outbox.c.platform_message_id,
    outbox.c.created_at,
    outbox.c.blocked_until,
    outbox.c.claim_epoch,
)
