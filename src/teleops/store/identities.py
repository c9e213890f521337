"""Chat identities: (platform, immutable user id) -> user; one-time link codes; seen updates; refusals."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import chat_refusals, chat_updates, identities, link_codes

__all__ = ["IdentityStore", "Invite", "LinkError", "LinkedIdentity"]

LINK_CODE_TTL = timedelta(hours=24)


class LinkError(ValueError):
    """The link code is unknown, used, or expired. The message says what to do."""


@dataclass(frozen=True, slots=True)
class LinkedIdentity:
    platform: str
    external_id: str
    user_name: str
    created_at: datetime
    via: str


@dataclass(frozen=True, slots=True)
class Invite:
    """A link code not used yet and not expired (the code itself is never stored: only its hash)."""

    id: int
    user_name: str
    created_at: datetime
    expires_at: datetime


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

    async def invite(
        self, user_name: str, *, now: datetime, ttl: timedelta = LINK_CODE_TTL, by: str | None = None
    ) -> str:
        """A new one-time code for `user_name` (only its hash is stored). Shown once to the admin.

        With `by` (a person handing the code out) it is audited as `invite.created`, never with the code; the web
        console's own link to itself (routes/ui_console.py) spends its code at once and is audited as the link.
        Raises StorageUnavailable."""
        code = "-".join(secrets.token_hex(2).upper() for _ in range(3))  # e.g. 3F2A-91BC-07DE

        def apply(conn: Connection) -> None:
            conn.execute(
                insert(link_codes).values(
                    user_name=user_name, code_hash=_hash(code), created_at=now, expires_at=now + ttl
                )
            )
            if by is not None:
                data = {"expires_at": (now + ttl).isoformat()}
                append(conn, at=now, actor=by, action="invite.created", subject=f"user:{user_name}", data=data)

        await self._db.run_in_transaction(apply)
        return code

    async def pending_invites(self, *, now: datetime) -> list[Invite]:
        """Link codes neither used nor expired, oldest first."""
        query = (
            select(link_codes.c.id, link_codes.c.user_name, link_codes.c.created_at, link_codes.c.expires_at)
            .where(link_codes.c.used_at.is_(None), link_codes.c.expires_at > now)
            .order_by(link_codes.c.id)
        )
        return [Invite(r.id, r.user_name, r.created_at, r.expires_at) for r in await self._db.all(query)]

    async def revoke_invite(self, invite_id: int, *, now: datetime, by: str) -> str | None:
        """Make a pending link code unusable (it expires now); the user it was for, or None when it was not pending.
        Audited as `invite.revoked`. Raises StorageUnavailable."""

        def apply(conn: Connection) -> str | None:
            user_name = conn.execute(
                update(link_codes)
                .where(link_codes.c.id == invite_id, link_codes.c.used_at.is_(None), link_codes.c.expires_at > now)
                .values(expires_at=now)
                .returning(link_codes.c.user_name)
            ).scalar_one_or_none()
            if user_name is None:
                return None
            data = {"invite": invite_id}
            append(conn, at=now, actor=by, action="invite.revoked", subject=f"user:{user_name}", data=data)
            return str(user_name)

        return await self._db.run_in_transaction(apply)

    async def linked(self, user_name: str | None = None) -> list[LinkedIdentity]:
        """Chat accounts linked at runtime (`/link CODE`), of `user_name` or of everyone, oldest first."""
        query = select(identities).order_by(identities.c.id)
        if user_name is not None:
            query = query.where(identities.c.user_name == user_name)
        rows = await self._db.all(query)
        return [LinkedIdentity(r.platform, r.external_id, r.user_name, r.created_at, r.via) for r in rows]

    async def unlink(
        self,
        user_name: str,
        platform: str,
        external_id: str,
        *,
        now: datetime,
        by: str,
        before: Callable[[Connection], object] = bool,
    ) -> bool:
        """Remove `user_name`'s link to this chat account; False when there was none. `before(conn)` runs first in
        the same transaction (to tell them there while the link still stands). Audited as `identity.unlinked`.
        Raises StorageUnavailable."""
        where = (
            identities.c.user_name == user_name,
            identities.c.platform == platform,
            identities.c.external_id == external_id,
        )

        def apply(conn: Connection) -> bool:
            if conn.execute(select(identities.c.id).where(*where)).first() is None:
                return False
            before(conn)
            conn.execute(delete(identities).where(*where))
            data = {"platform": platform, "external_id": external_id}
            append(conn, at=now, actor=by, action="identity.unlinked", subject=f"user:{user_name}", data=data)
            return True

        return await self._db.run_in_transaction(apply)

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
