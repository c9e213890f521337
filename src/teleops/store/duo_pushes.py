"""Duo push state every replica shares: the one push waiting on a person's phone, and the elevation an approved
push gives (commands/duo.py; docs/threat-model.md T20).

T20 says a person has at most one push waiting at a time, so nobody can be pushed into tapping "approve". Held in
one process's memory, that rule held per replica: a second command sent through another replica pushed again. Now
the slot is a row, taken with an atomic upsert that succeeds only when no push is waiting, so two replicas asking
at the same moment send one push between them. A replica that dies mid-push cannot free its slot; the slot is
therefore held until `waiting_until` (longer than any push can take) and free after that whatever happened.

An approved push elevates the person for the elevation window on every replica, plus one command right after
(`grant_once`, taken atomically: with a 0 s window the approval still runs exactly the command it was for).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Column, String, Table, Text, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import UTCDateTime, metadata

__all__ = ["DuoPushStore", "WaitingPush", "duo_pushes"]

duo_pushes = Table(
    "duo_pushes",
    metadata,
    Column("user_name", String(64), primary_key=True),
    Column("command", Text),  # the waiting push's command, as shown on the phone
    Column("host", String(255)),
    Column("started_at", UTCDateTime),
    Column("waiting_until", UTCDateTime),  # the slot is taken until then (or until released)
    Column("elevated_until", UTCDateTime),
    Column("grant_once", Boolean, nullable=False, default=False),
)


@dataclass(frozen=True, slots=True)
class WaitingPush:
    user: str
    command: str
    host: str
    started_at: datetime


class DuoPushStore:
    """The slot and the elevation of the module docstring. Every method raises StorageUnavailable when the database
    does not answer (the caller fails closed: no push, no elevation)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def take_slot(
        self, user: str, *, command: str, host: str, now: datetime, until: datetime
    ) -> tuple[WaitingPush, bool]:
        """Take `user`'s push slot until `until` (or until `release`). Returns the push holding the slot and True
        when it is this one (the slot was free), or the push already waiting and False."""

        def apply(conn: Connection) -> tuple[WaitingPush, bool]:
            values = {
                "user_name": user,
                "command": command,
                "host": host,
                "started_at": now,
                "waiting_until": until,
                "grant_once": False,
            }
            taken = {"command": command, "host": host, "started_at": now, "waiting_until": until}
            free = or_(duo_pushes.c.waiting_until.is_(None), duo_pushes.c.waiting_until <= now)
            key = [duo_pushes.c.user_name]
            if conn.dialect.name == "postgresql":
                pg = pg_insert(duo_pushes).values(**values)
                upsert = pg.on_conflict_do_update(index_elements=key, set_=taken, where=free)
                won = conn.execute(upsert.returning(duo_pushes.c.user_name)).first() is not None
            else:
                lite = sqlite_insert(duo_pushes).values(**values)
                upserted = lite.on_conflict_do_update(index_elements=key, set_=taken, where=free)
                won = conn.execute(upserted.returning(duo_pushes.c.user_name)).first() is not None
            row = conn.execute(
                select(duo_pushes.c.command, duo_pushes.c.host, duo_pushes.c.started_at).where(
                    duo_pushes.c.user_name == user
                )
            ).one()
            return WaitingPush(user, str(row.command), str(row.host), row.started_at), won

        return await self._db.run_in_transaction(apply)

    async def release(self, push: WaitingPush) -> None:
        """Free the slot `push` took (nothing when another push holds it by now)."""
        await self._db.run_in_transaction(
            lambda conn: conn.execute(
                update(duo_pushes)
                .where(duo_pushes.c.user_name == push.user, duo_pushes.c.started_at == push.started_at)
                .values(command=None, host=None, started_at=None, waiting_until=None)
            )
        )

    async def waiting(self, user: str, *, now: datetime) -> WaitingPush | None:
        """The push waiting on `user`'s phone now, or None."""
        row = await self._db.first(
            select(duo_pushes.c.command, duo_pushes.c.host, duo_pushes.c.started_at).where(
                duo_pushes.c.user_name == user, duo_pushes.c.waiting_until > now
            )
        )
        return None if row is None else WaitingPush(user, str(row.command), str(row.host), row.started_at)

    async def elevate(self, user: str, *, until: datetime) -> None:
        """An approved push: `user` is elevated until `until`, and for one command whatever the window."""
        await self._db.run_in_transaction(
            lambda conn: conn.execute(
                update(duo_pushes).where(duo_pushes.c.user_name == user).values(elevated_until=until, grant_once=True)
            )
        )

    async def elevated(self, user: str, *, now: datetime) -> bool:
        """True while an approved push covers `user`'s commands: inside the window, or once (taken) right after."""

        def apply(conn: Connection) -> bool:
            until = conn.execute(
                select(duo_pushes.c.elevated_until).where(duo_pushes.c.user_name == user)
            ).scalar_one_or_none()
            if until is not None and now < until:
                return True
            taken = conn.execute(
                update(duo_pushes)
                .where(duo_pushes.c.user_name == user, duo_pushes.c.grant_once.is_(True))
                .values(grant_once=False)
            ).rowcount
            return bool(taken)

        return await self._db.run_in_transaction(apply)
