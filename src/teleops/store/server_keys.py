"""Secrets the controller generates once and every replica shares (the web session signing key)."""

from __future__ import annotations

import contextlib
import secrets
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.database import Database
from teleops.store.schema import server_keys

__all__ = ["server_key"]


async def server_key(db: Database, name: str, *, now: datetime) -> bytes:
    """The key called `name`: read it, or create 32 random bytes once (the first replica to insert wins).

    Raises StorageUnavailable when the database does not answer.
    """

    def read(conn: Connection) -> str | None:
        value = conn.execute(select(server_keys.c.value).where(server_keys.c.name == name)).scalar_one_or_none()
        return None if value is None else str(value)

    def create(conn: Connection) -> None:
        conn.execute(insert(server_keys).values(name=name, value=secrets.token_hex(32), created_at=now))

    value = await db.run_in_transaction(read)
    if value is None:
        # Another replica may create it between our read and insert: then theirs is the key.
        with contextlib.suppress(IntegrityError):
            await db.run_in_transaction(create)
        value = await db.run_in_transaction(read)
    assert value is not None
    return bytes.fromhex(value)
