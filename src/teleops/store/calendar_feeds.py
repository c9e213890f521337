"""iCal feed tokens: a read-only calendar of a rotation or a person, reached by a secret in its URL.

Like API tokens (store/tokens.py) the secret is random, shown once, and stored only as its SHA-256; the lookup is by
hash and the final comparison constant-time. A feed is revocable; a revoked or unknown secret finds nothing, and the
route answers 404 without saying which. Creating and revoking are audited in the same transaction.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, String, Table, insert, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.audit import append
from teleops.store.schema import Id, UTCDateTime, metadata
from teleops.store.tokens import hash_secret

__all__ = ["CalendarFeed", "FeedKind", "calendar_feeds", "create_feed", "feed_for_secret", "feeds", "revoke_feed"]

_PREFIX = "tlo_cal_"

calendar_feeds = Table(
    "calendar_feeds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "rotation" or "user"
    Column("subject", String(128), nullable=False),  # the rotation's or the person's name
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_by", String(64)),
    Column("revoked_at", UTCDateTime),
    Index("ix_calendar_feeds_kind", "kind", "subject"),
)


class FeedKind(enum.StrEnum):
    ROTATION = "rotation"
    USER = "user"


@dataclass(frozen=True, slots=True)
class CalendarFeed:
    id: int
    kind: FeedKind
    subject: str
    created_by: str
    created_at: datetime


def _feed(row: Row[Any]) -> CalendarFeed:
    return CalendarFeed(
        int(row.id),
        FeedKind(row.kind),
        row.subject,
        row.created_by,
        row.created_at,
    )


def create_feed(conn: Connection, kind: FeedKind, subject: str, *, by: str, now: datetime) -> tuple[CalendarFeed, str]:
    """A new feed and its secret (to show once), audited as `calendar_feed.created` (never the secret)."""
    secret = _PREFIX + secrets.token_urlsafe(32)
    new_id = conn.execute(
        insert(calendar_feeds)
        .values(kind=kind.value, subject=subject, secret_hash=hash_secret(secret), created_by=by, created_at=now)
        .returning(calendar_feeds.c.id)
    ).scalar_one()
    feed = CalendarFeed(int(new_id), kind, subject, by, now)
    data = {"id": feed.id, "kind": kind.value, "subject": subject}
    append(conn, at=now, actor=by, action="calendar_feed.created", subject=f"{kind.value}:{subject}", data=data)
    return feed, secret


def revoke_feed(conn: Connection, feed_id: int, *, by: str, now: datetime) -> CalendarFeed | None:
    """Revoke a live feed (audited as `calendar_feed.revoked`); None when no live feed has this id."""
    row = conn.execute(
        select(calendar_feeds).where(calendar_feeds.c.id == feed_id, calendar_feeds.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    result = conn.execute(
        update(calendar_feeds)
        .where(calendar_feeds.c.id == feed_id, calendar_feeds.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_by=by)
    )
    if not result.rowcount:
        return None
    feed = _feed(row)
    data = {"id": feed.id, "kind": feed.kind.value, "subject": feed.subject}
    subject = f"{feed.kind.value}:{feed.subject}"
    append(conn, at=now, actor=by, action="calendar_feed.revoked", subject=subject, data=data)
    return feed


def feed_for_secret(conn: Connection, kind: FeedKind, subject: str, secret: str) -> CalendarFeed | None:
    """The live feed of `kind`/`subject` whose secret this is; None for a wrong, revoked or other feed's secret."""
    digest = hash_secret(secret)
    row = conn.execute(
        select(calendar_feeds).where(
            calendar_feeds.c.secret_hash == digest,
            calendar_feeds.c.kind == kind.value,
            calendar_feeds.c.subject == subject,
            calendar_feeds.c.revoked_at.is_(None),
        )
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    return _feed(row)


def feeds(conn: Connection) -> Sequence[CalendarFeed]:
    """Every live feed, oldest first."""
    rows = conn.execute(
        select(calendar_feeds).where(calendar_feeds.c.revoked_at.is_(None)).order_by(calendar_feeds.c.id)
    ).all()
    return [_feed(row) for row in rows]
