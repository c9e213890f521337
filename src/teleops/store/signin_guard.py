"""The web sign-in's brakes, in the database so every replica counts the same tries (issue #23).

Two rules, both about wrong passwords at /ui/login (server/routes/ui_login.py):

- the **throttle**: at most `throttle_limit` failed passwords per (user name, client address) in a sliding
  `throttle_window` (default 10 a minute); the next try is answered 429 until the oldest ages out;
- the **lockout**: `lockout_after` failed passwords in a row for one user name, from anywhere, lock that name's web
  sign-in for `lockout_for` (`twofactor.lockout_after`, `twofactor.web_lockout`); a right password resets the row.

Both used to live in each process's memory, so two replicas behind a load balancer gave an attacker twice the
tries, and a restart forgot them. Now each failure is a row change in the same database every replica reads, so
a lock set through replica A refuses the next try on replica B, and a restart forgets nothing. The counts are
atomic upserts: two replicas counting a failure at the same moment both count.

Names and addresses are stored as SHA-256 digests (a read of these tables does not list who tried which name
from where; the audit log has that, `login.failed`). What keeps the tables small: failures older than the
throttle window are deleted whenever one is added (the throttle itself bounds each pair to `throttle_limit`
rows), and a lockout row untouched for `FORGET_AFTER` (a day) with no lock running is deleted likewise, so a flood
of made-up names costs one row each for a day.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import Column, Index, Integer, String, Table, and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import Id, UTCDateTime, metadata

__all__ = ["FORGET_AFTER", "SignInGuard", "signin_failures", "signin_lockouts"]

FORGET_AFTER = timedelta(days=1)

signin_failures = Table(
    "signin_failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("pair", String(64), nullable=False),  # SHA-256 of (lower-cased user name, client address)
    Column("failed_at", UTCDateTime, nullable=False),
    Index("ix_signin_failures_pair", "pair", "failed_at"),
    Index("ix_signin_failures_failed_at", "failed_at"),
)

signin_lockouts = Table(
    "signin_lockouts",
    metadata,
    Column("user_key", String(64), primary_key=True),  # SHA-256 of the lower-cased user name
    Column("failures", Integer, nullable=False),  # failed passwords in a row since the last right one or lock
    Column("last_failed_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
    Index("ix_signin_lockouts_last_failed_at", "last_failed_at"),
)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _user_key(user: str) -> str:
    return _digest("user", user.lower())


def _pair(user: str, address: str) -> str:
    return _digest("pair", user.lower(), address)


class SignInGuard:
    """The throttle and the lockout of the module docstring. Every method raises StorageUnavailable when the
    database does not answer (the login route then refuses: no check, no sign-in)."""

    def __init__(
        self,
        db: Database,
        *,
        lockout_after: int,
        lockout_for: timedelta,
        throttle_limit: int = 10,
        throttle_window: timedelta = timedelta(minutes=1),
    ) -> None:
        self._db = db
        self.lockout_after = lockout_after
        self.lockout_for = lockout_for
        self.throttle_limit = throttle_limit
        self.throttle_window = throttle_window

    async def locked_until(self, user: str, *, now: datetime) -> datetime | None:
        """When `user`'s web sign-in lock ends, or None when it is not locked now."""
        until = await self._db.scalar(
            select(signin_lockouts.c.locked_until).where(
                signin_lockouts.c.user_key == _user_key(user), signin_lockouts.c.locked_until > now
            )
        )
        return None if until is None else until

    async def retry_after(self, user: str, address: str, *, now: datetime) -> int | None:
        """Seconds until this (user, address) pair may try again, or None when it may try now."""
        row = await self._db.read(
            lambda conn: conn.execute(
                select(func.count(), func.min(signin_failures.c.failed_at)).where(
                    signin_failures.c.pair == _pair(user, address),
                    signin_failures.c.failed_at > now - self.throttle_window,
                )
            ).one()
        )
        count, oldest = int(row[0]), row[1]
        if count < self.throttle_limit or oldest is None:
            return None
        return max(1, int((oldest + self.throttle_window - now).total_seconds()) + 1)

    async def password_failed(self, user: str, address: str, *, now: datetime) -> datetime | None:
        """Count one wrong password of `user` from `address` (throttle and, for a non-empty name, lockout) in one
        transaction; the time the lock ends when this failure locked the name, else None."""
        pair = _pair(user, address)
        key = _user_key(user)

        def apply(conn: Connection) -> datetime | None:
            conn.execute(delete(signin_failures).where(signin_failures.c.failed_at <= now - self.throttle_window))
            conn.execute(signin_failures.insert().values(pair=pair, failed_at=now))
            if not user:
                return None
            conn.execute(
                delete(signin_lockouts).where(
                    signin_lockouts.c.last_failed_at < now - FORGET_AFTER,
                    or_(signin_lockouts.c.locked_until.is_(None), signin_lockouts.c.locked_until <= now),
                )
            )
            failures = _count_failure(conn, key, now)
            if failures < self.lockout_after:
                return None
            until = now + self.lockout_for
            conn.execute(
                update(signin_lockouts).where(signin_lockouts.c.user_key == key).values(failures=0, locked_until=until)
            )
            return until

        return await self._db.run_in_transaction(apply)

    async def password_right(self, user: str) -> None:
        """A right password breaks the row of failures (a running lock stays: it was checked before)."""
        await self._db.run_in_transaction(
            lambda conn: conn.execute(
                update(signin_lockouts)
                .where(and_(signin_lockouts.c.user_key == _user_key(user), signin_lockouts.c.failures > 0))
                .values(failures=0)
            )
        )

    async def signed_in(self, user: str, address: str) -> None:
        """A session started: forget this pair's failed passwords."""
        await self._db.run_in_transaction(
            lambda conn: conn.execute(delete(signin_failures).where(signin_failures.c.pair == _pair(user, address)))
        )


def _count_failure(conn: Connection, key: str, now: datetime) -> int:
    """Add one to `key`'s failures in a row (creating its row), atomically on either engine; the new count."""
    values = {"user_key": key, "failures": 1, "last_failed_at": now}
    counted = {"failures": signin_lockouts.c.failures + 1, "last_failed_at": now}
    returning = signin_lockouts.c.failures
    if conn.dialect.name == "postgresql":
        pg = pg_insert(signin_lockouts).values(**values)
        upsert = pg.on_conflict_do_update(index_elements=[signin_lockouts.c.user_key], set_=counted)
        return int(conn.execute(upsert.returning(returning)).scalar_one())
    lite = sqlite_insert(signin_lockouts).values(**values)
    upserted = lite.on_conflict_do_update(index_elements=[signin_lockouts.c.user_key], set_=counted)
    return int(conn.execute(upserted.returning(returning)).scalar_one())
