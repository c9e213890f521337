"""People: name, role, web-console password (scrypt). Chat identities are linked in the chat issue.

A new password or a new role ends the user's web console sessions in the same transaction (issue #18,
store/web_sessions.py), audited as `session.revoked`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.database import Database
from teleops.store.schema import users
from teleops.store.web_sessions import revoke_user_sessions

__all__ = ["UserExists", "UserRecord", "UserStore", "check_password", "hash_password"]

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserExists(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    role: str
    created_at: datetime


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_hex, digest_hex = stored.split("$", 2)
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


CACHE_SECONDS = 5.0


class UserStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # name -> (record, expiry): every API command and console request reads its user, and a role only changes
        # when a controller starts with another config (`ensure`, which refreshes this entry); another replica's
        # change is seen within CACHE_SECONDS. Unknown names are not cached (a new user is found at once).
        self._cache: dict[str, tuple[UserRecord, float]] = {}

    async def create(self, name: str, role: str, *, now: datetime, password: str | None = None) -> UserRecord:
        def apply(conn: Connection) -> int:
            return int(
                conn.execute(
                    insert(users)
                    .values(
                        name=name,
                        role=role,
                        password_hash=hash_password(password) if password else None,
                        created_at=now,
                    )
                    .returning(users.c.id)
                ).scalar_one()
            )

        try:
            user_id = await self._db.run_in_transaction(apply)
        except IntegrityError as exc:
            raise UserExists(f"user {name!r} already exists") from exc
        return UserRecord(user_id, name, role, now)

    async def ensure(self, name: str, role: str, *, now: datetime) -> UserRecord:
        """The user called `name`, created with `role` if missing; a configured role wins over the stored one."""
        self._cache.pop(name, None)
        existing = await self.get(name)
        if existing is None:
            try:
                return await self.create(name, role, now=now)
            except UserExists:
                existing = await self.get(name)
                assert existing is not None
        if existing.role != role:
            user_id, before = existing.id, existing.role

            def apply(conn: Connection) -> None:
                # Only the replica whose UPDATE changed the role revokes (and audits) the sessions.
                changed = conn.execute(
                    update(users).where(users.c.id == user_id, users.c.role != role).values(role=role)
                ).rowcount
                if changed:
                    revoke_user_sessions(
                        conn,
                        user_id,
                        now=now,
                        reason="role changed",
                        actor="system",
                        data={"from": before, "to": role, "via": "config"},
                    )

            await self._db.run_in_transaction(apply)
            self._cache.pop(name, None)
            existing = UserRecord(existing.id, name, role, existing.created_at)
        return existing

    async def get(self, name: str) -> UserRecord | None:
        cached = self._cache.get(name)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        row = await self._db.first(select(users).where(users.c.name == name))
        if row is None:
            return None
        record = UserRecord(row.id, row.name, row.role, row.created_at)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[name] = (record, time.monotonic() + CACHE_SECONDS)
        return record

    async def verify_password(self, name: str, password: str) -> UserRecord | None:
        row = await self._db.first(select(users).where(users.c.name == name))
        if row is None:
            check_password(password, hash_password("timing-equaliser"))
            return None
        if not check_password(password, row.password_hash):
            return None
        return UserRecord(row.id, row.name, row.role, row.created_at)

    async def set_password(self, name: str, password: str, *, now: datetime | None = None, by: str = "cli") -> bool:
        """Set `name`'s password and revoke their web sessions (audited with actor `by`); False for no such user.

        Raises StorageUnavailable or AuditUnavailable when it could not be written (then nothing changed).
        """
        at = now or datetime.now(UTC)
        digest = hash_password(password)  # scrypt outside the transaction: it must not hold the write lock

        def apply(conn: Connection) -> bool:
            user_id = conn.execute(
                update(users).where(users.c.name == name).values(password_hash=digest).returning(users.c.id)
            ).scalar_one_or_none()
            if user_id is None:
                return False
            revoke_user_sessions(conn, int(user_id), now=at, reason="password changed", actor=by)
            return True

        return await self._db.run_in_transaction(apply)
