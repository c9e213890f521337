"""The admins' view of people (web UI, /ui/people): each person's role, 2FA state, last web sign-in and chat accounts.

A read model only: every change goes through the store that owns it (users.py `set_role`, twofactor.py `reset`,
identities.py `unlink` / `invite`), each audited there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.identities import LinkedIdentity
from teleops.store.schema import identities, users, web_sessions
from teleops.store.twofactor import two_factor

__all__ = ["Person", "people", "person"]


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str
    created_at: datetime
    enrolled: bool  # has a TOTP authenticator
    locked_at: datetime | None  # 2FA locked after too many wrong codes
    last_login: datetime | None  # newest web session they started (None: never signed in on the web)
    identities: tuple[LinkedIdentity, ...]


def _read(conn: Connection, name: str | None) -> list[Person]:
    last_login = (
        select(web_sessions.c.user_id, func.max(web_sessions.c.created_at).label("at"))
        .group_by(web_sessions.c.user_id)
        .subquery()
    )
    query = (
        select(
            users.c.name,
            users.c.role,
            users.c.created_at,
            two_factor.c.user_name.label("enrolled"),
            two_factor.c.locked_at,
            last_login.c.at.label("last_login"),
        )
        .outerjoin(two_factor, two_factor.c.user_name == users.c.name)
        .outerjoin(last_login, last_login.c.user_id == users.c.id)
        .order_by(users.c.name)
    )
    links = select(identities).order_by(identities.c.id)
    if name is not None:
        query = query.where(users.c.name == name)
        links = links.where(identities.c.user_name == name)
    linked: dict[str, list[LinkedIdentity]] = {}
    for r in conn.execute(links):
        linked.setdefault(r.user_name, []).append(
            LinkedIdentity(r.platform, r.external_id, r.user_name, r.created_at, r.via)
        )
    return [
        Person(
            name=r.name,
            role=r.role,
            created_at=r.created_at,
            enrolled=r.enrolled is not None,
            locked_at=r.locked_at,
            last_login=r.last_login,
            identities=tuple(linked.get(r.name, ())),
        )
        for r in conn.execute(query)
    ]


async def people(db: Database) -> list[Person]:
    """Everyone in the database, by name. Raises StorageUnavailable."""
    return await db.read(_read, None)


async def person(db: Database, name: str) -> Person | None:
    """One person, or None. Raises StorageUnavailable."""
    found = await db.read(_read, name)
    return found[0] if found else None
