"""Secrets the controller generates once and every replica shares (the web session signing key), and the
fingerprints of the key *files* every replica must hold the same copy of.

`argv.key` and `twofactor.key` encrypt data that is in the database (sealed command lines, approval bindings,
TOTP secrets), so the database must not hold them: each replica keeps them in its `data_dir`
(docs/replicas.md, "Key files"). A replica started with another copy would silently fail to open what the others
sealed (an approval never matches, an enrolled person's codes are refused), so on PostgreSQL each replica checks
its files at start against a fingerprint the first replica recorded: SHA-256 over a fixed label and the file's
content. The fingerprint gives nothing away about the key; it only says whether two copies are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.store.database import Database
from teleops.store.schema import server_keys

__all__ = ["KeyFileDisagrees", "agree_on_key_file", "key_fingerprint", "server_key"]


class KeyFileDisagrees(Exception):
    """This replica's copy of a shared key file is missing or not the one the other replicas use."""


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


def key_fingerprint(content: bytes) -> str:
    """What is recorded of a key file: it tells two copies apart and nothing else."""
    return hashlib.sha256(b"teleops key file fingerprint v1\x00" + content.strip()).hexdigest()


async def agree_on_key_file(db: Database, path: Path, *, now: datetime) -> bool:
    """Check this replica's `path` against the fingerprint recorded for its file name, recording it when none is.

    Returns False when the file is missing here and no replica has recorded one yet (the caller creates it, then
    calls again). Raises KeyFileDisagrees (saying what to do) when the file is missing here but recorded by
    another replica, or its content differs from theirs; StorageUnavailable when the database does not answer.
    """
    name = f"fingerprint:{path.name}"

    def read(conn: Connection) -> str | None:
        value = conn.execute(select(server_keys.c.value).where(server_keys.c.name == name)).scalar_one_or_none()
        return None if value is None else str(value)

    recorded = await db.run_in_transaction(read)
    try:
        content = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        if recorded is None:
            return False
        raise KeyFileDisagrees(
            f"{path} is missing, but the other replicas on this database have one. Copy {path.name} from a running "
            f"replica's data_dir to {path.parent} (mode 0600, owned by this user), then start again "
            '(docs/replicas.md, "Key files")'
        ) from None
    mine = key_fingerprint(content)
    if recorded is None:

        def record(conn: Connection) -> None:
            conn.execute(insert(server_keys).values(name=name, value=mine, created_at=now))

        with contextlib.suppress(IntegrityError):  # another replica recorded its own at the same moment
            await db.run_in_transaction(record)
        recorded = await db.run_in_transaction(read)
    if recorded != mine:
        forget = f"DELETE FROM server_keys WHERE name = '{name}'"  # noqa: S608 (a hint for the operator, not run)
        raise KeyFileDisagrees(
            f"{path} is not the {path.name} the other replicas on this database use (the fingerprints differ), so "
            f"this replica could not open what they sealed. Copy {path.name} from a running replica's data_dir over "
            f'this one, then start again (docs/replicas.md, "Key files"). If every copy of the old key is lost and '
            f"this one is meant to replace it, first run on the database: {forget}"
        )
    return True
