"""What TeleOps' self-check (server/selfwatch) reads and writes in the database, and nothing else does.

- A *liveness mark*: one `server_keys` row per host (`self-check:<hostname>`) rewritten with the time at every
  check and read back, so "the database can take a durable write right now" is tested with a real write
  transaction (a locked or full database fails it), not inferred.
- *Probe rows*: outbox rows on a platform of their own (`PROBE_PLATFORM_PREFIX` + a per-process suffix), which
  only the self-test's own delivery worker serves; nobody sees them, and each is deleted once delivered.
- The age of the oldest message still queued for each real platform.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.outbox_queue import OutboxStatus, enqueue_send
from teleops.store.schema import outbox, server_keys

__all__ = [
    "PROBE_PLATFORM_PREFIX",
    "delete_probe",
    "enqueue_probe",
    "oldest_queued",
    "probe_status",
    "sweep_stale_probes",
    "write_liveness_mark",
]

PROBE_PLATFORM_PREFIX = "self-test-"
_MARK_PREFIX = "self-check:"
_LIVE = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value)


def _liveness_key(host: str) -> str:
    return (_MARK_PREFIX + host)[:64]


async def write_liveness_mark(db: Database, host: str, *, now: datetime) -> None:
    """Write `now` into this host's liveness row (durably: committed and fsynced) and read it back.

    Raises StorageUnavailable when the database refuses or does not answer, and RuntimeError when the value read
    back is not the one written (another writer or a broken read path)."""
    name, value = _liveness_key(host), now.isoformat()

    def write(conn: Connection) -> None:
        changed = conn.execute(update(server_keys).where(server_keys.c.name == name).values(value=value)).rowcount
        if not changed:
            conn.execute(insert(server_keys).values(name=name, value=value, created_at=now))

    def read(conn: Connection) -> str | None:
        found = conn.execute(select(server_keys.c.value).where(server_keys.c.name == name)).scalar_one_or_none()
        return None if found is None else str(found)

    await db.write(write)
    back = await db.read(read)
    # Another replica on a host of the same name may have written meanwhile: a later time is fine too.
    if back is None or back < value:
        raise RuntimeError(f"the liveness mark read back {back!r} after writing {value!r}")


async def enqueue_probe(db: Database, platform: str, *, chat_id: str, now: datetime) -> int:
    """Queue one probe message on `platform` (durably); returns its outbox row id."""

    def write(conn: Connection) -> int:
        payload = {"message": {"title": "TeleOps self-test", "body": "delivery probe"}}
        return enqueue_send(conn, platform=platform, chat_id=chat_id, payload=payload, now=now, purpose="self-test")

    return await db.write(write)


async def probe_status(db: Database, row_id: int) -> str | None:
    """The delivery status of probe row `row_id` (None: no such row)."""
    found = await db.scalar(select(outbox.c.status).where(outbox.c.id == row_id))
    return None if found is None else str(found)


async def delete_probe(db: Database, row_id: int) -> None:
    """Remove a probe row (delivered or given up on): probes leave nothing behind."""

    def write(conn: Connection) -> None:
        conn.execute(delete(outbox).where(outbox.c.id == row_id, outbox.c.platform.startswith(PROBE_PLATFORM_PREFIX)))

    await db.write_unsynced(write)


async def sweep_stale_probes(db: Database, *, before: datetime) -> int:
    """Delete probe rows of any process created before `before` (a process killed mid-test leaves one behind);
    returns how many."""

    def write(conn: Connection) -> int:
        gone = conn.execute(
            delete(outbox).where(outbox.c.platform.startswith(PROBE_PLATFORM_PREFIX), outbox.c.created_at < before)
        )
        return int(gone.rowcount or 0)

    return await db.write_unsynced(write)


async def oldest_queued(db: Database, platforms: Sequence[str]) -> dict[str, datetime]:
    """For each of `platforms` with messages not yet delivered (pending or sending), when the oldest was queued."""
    if not platforms:
        return {}
    query = (
        select(outbox.c.platform, func.min(outbox.c.created_at).label("oldest"))
        .where(outbox.c.platform.in_(list(platforms)), outbox.c.status.in_(_LIVE))
        .group_by(outbox.c.platform)
    )
    rows = await db.all(query)
    found = (row._mapping for row in rows)
    return {str(m["platform"]): m["oldest"] for m in found if m["oldest"] is not None}
