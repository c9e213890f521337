"""Web console sessions as rows: what makes a signed session cookie still good (issue #18).

The cookie (server/session.py) carries a random session id; the row is keyed by the id's SHA-256 (a read of the
database alone gives no usable session) and says whose session it is, the role it was started under, when it
started, when it was last seen, and whether and why it was revoked. Every check reads the row, so a revocation
is seen by every replica on its next request. `last_seen_at` is written at most once per `touch_every` per
session, not on every request.

Every start and end is in the audit log, in the same transaction as the row change: `login.succeeded` (no audit
record, no session), `logout`, and `session.revoked` when a password or role change ends a user's sessions
(`revoke_user_sessions`, called by store/users.py inside its own transaction).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import users, web_sessions

__all__ = ["LiveSession", "WebSessionStore", "revoke_user_sessions"]


@dataclass(frozen=True, slots=True)
class LiveSession:
    user: str
    role: str
    created_at: datetime
    last_seen_at: datetime


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def revoke_user_sessions(
    conn: Connection, user_id: int, *, now: datetime, reason: str, actor: str, data: Mapping[str, Any] | None = None
) -> int:
    """Revoke every live session of user `user_id` inside the caller's transaction; returns how many.

    When there were any, appends `session.revoked` (with `reason`, the count and `data`) to the audit log in the
    same transaction. Raises AuditUnavailable as `append` does (the caller's transaction then rolls back).
    """
    revoked = conn.execute(
        update(web_sessions)
        .where(web_sessions.c.user_id == user_id, web_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    ).rowcount
    if revoked:
        name = conn.execute(select(users.c.name).where(users.c.id == user_id)).scalar_one()
        append(
            conn,
            at=now,
            actor=actor,
            action="session.revoked",
            subject=f"user:{name}",
            data={"reason": reason, "sessions": int(revoked), **(data or {})},
        )
    return int(revoked)


class WebSessionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start(
        self, sid: str, user: str, *, now: datetime, lifetime: timedelta, audit_data: Mapping[str, Any]
    ) -> None:
        """Record a new session of `user` and append `login.succeeded` (with `audit_data`) in one transaction.

        Also deletes the rows of sessions older than `lifetime` (dead whatever their state). Raises
        StorageUnavailable or AuditUnavailable when it could not be written; then there is no session.
        """

        def apply(conn: Connection) -> None:
            row = conn.execute(select(users.c.id, users.c.role).where(users.c.name == user)).one()
            conn.execute(delete(web_sessions).where(web_sessions.c.created_at < now - lifetime))
            conn.execute(
                insert(web_sessions).values(
                    id=_key(sid), user_id=row.id, role=row.role, created_at=now, last_seen_at=now
                )
            )
            append(conn, at=now, actor=user, action="login.succeeded", subject=f"user:{user}", data=audit_data)

        await self._db.run_in_transaction(apply)

    async def check(
        self, sid: str, *, now: datetime, idle: timedelta, lifetime: timedelta, touch_every: timedelta
    ) -> LiveSession | None:
        """The session `sid` if it is live now: not revoked, seen within `idle`, started within `lifetime`, and its
        user still exists with the role it logged in with; else None. Moves `last_seen_at` to `now` when it is
        `touch_every` old or older. Raises StorageUnavailable when the database does not answer.
        """
        key = _key(sid)
        row = await self._db.first(
            select(
                web_sessions.c.role,
                web_sessions.c.created_at,
                web_sessions.c.last_seen_at,
                web_sessions.c.revoked_at,
                users.c.name,
                users.c.role.label("current_role"),
            )
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(web_sessions.c.id == key)
        )
        if (
            row is None
            or row.revoked_at is not None
            or row.role != row.current_role
            or now - row.created_at > lifetime
            or now - row.last_seen_at > idle
        ):
            return None
        last_seen: datetime = row.last_seen_at
        if now - last_seen >= touch_every:

            def touch(conn: Connection) -> None:
                conn.execute(
                    update(web_sessions)
                    .where(web_sessions.c.id == key, web_sessions.c.last_seen_at < now)
                    .values(last_seen_at=now)
                )

            await self._db.run_in_transaction(touch)
            last_seen = now
        return LiveSession(str(row.name), str(row.current_role), row.created_at, last_seen)

    async def end(self, sid: str, *, now: datetime, user: str, audit_data: Mapping[str, Any] | None) -> bool:
        """Revoke session `sid` of `user` (logout) and append `logout` (with `audit_data`) in one transaction;
        with `audit_data` None, revoke only (for when the audit log cannot be written: a logout must still end
        the session).

        False when it was not live (already revoked or unknown: nothing is written). Raises StorageUnavailable
        or AuditUnavailable when it could not be written; then the session is still live.
        """

        def apply(conn: Connection) -> bool:
            ended = conn.execute(
                update(web_sessions)
                .where(web_sessions.c.id == _key(sid), web_sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="logout")
            ).rowcount
            if ended and audit_data is not None:
                append(conn, at=now, actor=user, action="logout", subject=f"user:{user}", data=audit_data)
            return bool(ended)

        return await self._db.run_in_transaction(apply)
