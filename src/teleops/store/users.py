"""People: name, role, web-console password (scrypt). Chat identities are linked in the chat issue.

A new password or a new role ends the user's web console sessions in the same transaction (issue #18,
store/web_sessions.py), audited as `session.revoked`.

Where a role comes from (docs/access-control.md, "Who sets a role"): a person declared under `users:` in the config
gets the configured role at every start (`ensure`, audited as `user.role_changed` with `via: config` when it
differs); everyone else's role lives only here and is changed with `set_role` (the web UI's People page, the CLI),
which start-up never touches."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import users
from teleops.store.web_sessions import revoke_user_sessions

__all__ = [
    "LastAdmin",
    "RoleChange",
    "UserExists",
    "UserRecord",
    "UserStore",
    "check_password",
    "hash_password",
]

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserExists(ValueError):
    pass


class LastAdmin(ValueError):
    """The change would leave no admin at all (nobody could manage people or tokens any more)."""


@dataclass(frozen=True, slots=True)
class RoleChange:
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


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
        # when a controller starts with another config (`ensure`) or an admin changes it (`set_role`), both of
        # which refresh this entry; another replica's change is seen within CACHE_SECONDS. Unknown names are not
        # cached (a new user is found at once).
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
                    # Not silent: the config is the source of truth for this person, and the log says it won.
                    append(
                        conn, at=now, actor="system", action="user.role_changed", subject=f"user:{name}",
                        data={"from": before, "to": role, "via": "config"},
                    )  # fmt: skip
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

    async def add(
        self, name: str, role: str, *, now: datetime, by: str, via: str, also: Callable[[Connection], object] = bool
    ) -> UserRecord:
        """Create `name` with `role`, audited as `user.created` (actor `by`, channel `via`) in the same transaction,
        with `also(conn)` run inside it too. Raises UserExists for a taken name, StorageUnavailable."""

        def apply(conn: Connection) -> int:
            user_id = int(
                conn.execute(
                    insert(users).values(name=name, role=role, created_at=now).returning(users.c.id)
                ).scalar_one()
            )
            append(
                conn, at=now, actor=by, action="user.created", subject=f"user:{name}", data={"role": role, "via": via}
            )
            also(conn)
            return user_id

        try:
            user_id = await self._db.run_in_transaction(apply)
        except IntegrityError as exc:
            raise UserExists(f"a person called {name!r} already exists; pick another name or open theirs") from exc
        return UserRecord(user_id, name, role, now)

    async def set_role(
        self, name: str, role: str, *, now: datetime, by: str, via: str, also: Callable[[Connection], object] = bool
    ) -> RoleChange | None:
        """Give `name` the role `role`; None when there is no such person.

        A real change is audited as `user.role_changed` (actor `by`, channel `via`), ends their web sessions and runs
        `also(conn)`, all in one transaction; the same role again changes nothing. Raises LastAdmin when it would
        demote the only admin, StorageUnavailable.
        """

        def apply(conn: Connection) -> RoleChange | None:
            row = conn.execute(select(users.c.id, users.c.role).where(users.c.name == name)).first()
            if row is None:
                return None
            change = RoleChange(str(row.role), role)
            if not change.changed:
                return change
            if change.before == "admin":
                admins = conn.execute(
                    select(func.count()).select_from(users).where(users.c.role == "admin")
                ).scalar_one()
                if int(admins) <= 1:
                    raise LastAdmin(f"{name} is the only admin; make someone else admin first, then change {name}")
            conn.execute(update(users).where(users.c.id == row.id).values(role=role))
            data = {"from": change.before, "to": role, "via": via}
            append(conn, at=now, actor=by, action="user.role_changed", subject=f"user:{name}", data=data)
            revoke_user_sessions(conn, int(row.id), now=now, reason="role changed", actor=by, data=data)
            also(conn)
            return change

        try:
            return await self._db.run_in_transaction(apply)
        finally:
            self._cache.pop(name, None)

    async def all(self) -> list[UserRecord]:
        """Everyone, by name."""
        rows = await self._db.all(select(users).order_by(users.c.name))
        return [UserRecord(r.id, r.name, r.role, r.created_at) for r in rows]
