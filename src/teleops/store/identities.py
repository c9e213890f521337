"""Chat identities: (platform, immutable user id) -> user; one-time link codes; seen updates; refusals."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import chat_refusals, chat_updates, identities, link_codes

__all__ = ["IdentityStore", "LinkError"]

LINK_CODE_TTL = timedelta(hours=24)


class LinkError(ValueError):
    """The link code is unknown, used, or expired. The message says what to do."""


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def user_of(self, platform: str, external_id: str) -> str | None:
        """The user linked at runtime to this chat account, or None."""
        query = select(identities.c.user_name).where(
            identities.c.platform == platform, identities.c.external_id == external_id
        )
        value = await self._db.scalar(query)
        return str(value) if value is not None else None

    async def invite(self, user_name: str, *, now: datetime, ttl: timedelta = LINK_CODE_TTL) -> str:
        """A new one-time code for `user_name` (only its hash is stored). Shown once to the admin."""
        code = "-".join(secrets.token_hex(2).upper() for _ in range(3))  # e.g. 3F2A-91BC-07DE

        def apply(conn: Connection) -> None:
            conn.execute(
                insert(link_codes).values(
                    user_name=user_name, code_hash=_hash(code), created_at=now, expires_at=now + ttl
                )
            )

        await self._db.run_in_transaction(apply)
        return code

    async def link(self, platform: str, external_id: str, code: str, *, now: datetime) -> str:
        """Bind the chat account to the code's user and spend the code. Returns the user name.

        Raises LinkError when the code is unknown, spent or expired, or this account is already linked.
        """

        def apply(conn: Connection) -> str:
            row = conn.execute(
                select(link_codes.c.id, link_codes.c.user_name, link_codes.c.expires_at, link_codes.c.used_at).where(
                    link_codes.c.code_hash == _hash(code)
                )
            ).first()
            if row is None or row.used_at is not None:
                raise LinkError("that link code is unknown or already used; ask an admin for a new one")
            if row.expires_at <= now:
                raise LinkError("that link code has expired; ask an admin to run `teleops user invite NAME` again")
            spent = conn.execute(
                update(link_codes).where(link_codes.c.id == row.id, link_codes.c.used_at.is_(None)).values(used_at=now)
            )
            if spent.rowcount != 1:
                raise LinkError("that link code was just used; ask an admin for a new one")
            conn.execute(
                insert(identities).values(
                    platform=platform,
                    external_id=external_id,
                    user_name=row.user_name,
                    created_at=now,
                    via="link-code",
                )
            )
            append(
                conn, at=now, actor=str(row.user_name), action="identity.linked",
                subject=f"user:{row.user_name}", data={"platform": platform, "external_id": external_id},
            )  # fmt: skip
            return str(row.user_name)

        try:
            return str(await self._db.run_in_transaction(apply))
        except IntegrityError as exc:
            raise LinkError("this chat account is already linked to a TeleOps user; /whoami shows which") from exc

    async def first_delivery(self, platform: str, update_id: str, *, now: datetime) -> bool:
        """Record an inbound update; False when it was seen before (a replay: do nothing)."""

        def apply(conn: Connection) -> None:
            conn.execute(insert(chat_updates).values(platform=platform, update_id=update_id, received_at=now))

        try:
            # Not waiting for the fsync: whatever the update leads to (a dispatch, a message) is made durable
            # later in the same write-ahead log, which covers this row too; if nothing is, a replay after a
            # power loss does what never happened once.
            await self._db.write_unsynced(apply)
        except IntegrityError:
            return False
        return True

    async def first_refusal(self, platform: str, external_id: str, chat_id: str, *, now: datetime) -> bool:
        """Count a refused unlinked sender; True only the first time (they are told once, then ignored)."""

        def apply(conn: Connection) -> bool:
            done = conn.execute(
                update(chat_refusals)
                .where(chat_refusals.c.platform == platform, chat_refusals.c.external_id == external_id)
                .values(count=chat_refusals.c.count + 1)
            )
            if done.rowcount:
                return False
            conn.execute(
                insert(chat_refusals).values(
                    platform=platform, external_id=external_id, chat_id=chat_id, first_at=now, count=1
                )
            )
            return True

        try:
            return bool(await self._db.run_in_transaction(apply))
        except IntegrityError:
            return False
