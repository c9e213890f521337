"""Singleton leases: one replica at a time runs each singleton loop, and a replica that lost its lease cannot act.

Several controller replicas share one PostgreSQL (issue #23). Some loops must run in exactly one of them: the
Telegram poller (two pollers would split and repeat updates, and Telegram answers the second 409), housekeeping,
the external dead-man's-switch pings. Each such loop holds a row of `singleton_leases`:

- `holder` is the replica (`Database.replica`), `expires_at` is on the **database's** clock (`clock_timestamp()`),
  never a replica's, so clock skew between machines cannot make two holders.
- `epoch` grows by one at every new holding: it is the fencing token. Every singleton *action* re-checks, in its
  own transaction, that the row still names this holder and this epoch and has not expired (`fence`, `advance`);
  on PostgreSQL the check takes a share lock on the row, so a takeover (which locks it for update) waits until the
  fenced transaction has committed: nothing a stale holder writes can land after the new holder started.
- Acquisition is serialised with `pg_advisory_xact_lock` (one key per lease name) and takes the lease when it is
  free, expired, or already this replica's; the holder renews it every ttl/3 (server/singletons.py).

Why not a session advisory lock alone: it dies with its connection, but a replica frozen with SIGSTOP keeps its TCP
connection (the kernel answers keepalives for it), so its lock never dies and nobody takes over; and when it is
resumed it would go on believing it holds the loop. An expiring lease hands over within its TTL whatever the
holder's state, and the epoch makes the resumed replica's next action fail instead of acting twice
(docs/adr/0012-singletons-under-fenced-leases.md).

SQLite (the embedded default) is one process by construction: the same code runs, the database clock is this
machine's, and a lease left by an earlier process of this database (a crash, a kill -9) is taken at once rather
than after its TTL, so a restart behaves as before.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, Column, String, Table, func, insert, select, text, update
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import UTCDateTime, metadata

__all__ = ["Lease", "LeaseLost", "LeaseStore", "database_now", "fence", "singleton_leases"]

singleton_leases = Table(
    "singleton_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(160), nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # The loop's durable progress where it has one (the Telegram poller: the next getUpdates offset).
    Column("position", BigInteger, nullable=True),
    Column("position_at", UTCDateTime, nullable=True),
)

# The first key of every singleton's advisory lock (the second is the name's CRC-32): "TeleOps lease".
_ADVISORY_CLASS = 0x7E1E


class LeaseLost(Exception):
    """This replica no longer holds the lease it acted under (expired, or taken over with a newer epoch): the
    action was not done. Stop the singleton; the runner goes back to standby and tries to acquire it again."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One holding of a singleton by this replica. `epoch` is the fencing token; `expires_at` is database time.
    `taken_from` is the replica that held it before, when that was another one (a failover or a handover)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
    taken_from: str | None = None
    position: int | None = None
    position_at: datetime | None = None


def database_now(conn: Connection) -> datetime:
    """The database server's current time (UTC, aware). PostgreSQL: `clock_timestamp()`, the real time even late in
    a transaction that waited for a lock. SQLite: this machine's clock (the database is this process's)."""
    if conn.dialect.name == "sqlite":
        return datetime.now(UTC)
    value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def fence(conn: Connection, lease: Lease) -> datetime:
    """Inside a transaction: raise LeaseLost unless `lease` is still held (same holder and epoch, not expired by the
    database clock). On PostgreSQL the row stays share-locked until the transaction ends, so a takeover waits for
    it. Returns the database time of the check."""
    now = database_now(conn)
    query = select(singleton_leases.c.epoch).where(
        singleton_leases.c.name == lease.name,
        singleton_leases.c.holder == lease.holder,
        singleton_leases.c.epoch == lease.epoch,
        singleton_leases.c.expires_at > now,
    )
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(read=True)
    if conn.execute(query).first() is None:
        raise LeaseLost(f"lease {lease.name!r} epoch {lease.epoch} is no longer held by {lease.holder}")
    return now


class LeaseStore:
    """Acquire, renew, check and release this replica's singleton leases. `ttl` is how long a holding lasts
    without renewal: a dead or frozen holder's loop is taken over at most `ttl` after its last renewal."""

    def __init__(self, db: Database, *, ttl: timedelta) -> None:
        if ttl <= timedelta(0):
            raise ValueError("a lease TTL must be positive")
        self._db = db
        self._ttl = ttl
        self.replica = db.replica

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    async def acquire(self, name: str) -> Lease | None:
        """Take `name` for this replica when it is free, expired or already ours, with a new epoch; None when
        another replica holds it. Raises StorageUnavailable."""
        return await self._db.run_in_transaction(self._acquire, name)

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend a holding by `ttl` from now; None when it is lost (expired or taken over): stop at once.
        Raises StorageUnavailable (the holding is not extended: treat it as lost too)."""
        return await self._db.run_in_transaction(self._renew, lease)

    async def check(self, lease: Lease) -> bool:
        """Whether `lease` is still held, by the database clock (a fenced read, in its own transaction)."""
        try:
            await self._db.run_in_transaction(fence, lease)
        except LeaseLost:
            return False
        return True

    async def advance(self, lease: Lease, position: int) -> None:
        """Record the loop's progress (never backwards) in the same statement that checks the lease.
        Raises LeaseLost (nothing recorded) or StorageUnavailable."""
        await self._db.run_in_transaction(self._advance, lease, position)

    async def release(self, lease: Lease) -> None:
        """End a holding now (a clean stop), so a standby takes over at its next try instead of after the TTL.
        Does nothing when the lease is no longer ours. Raises StorageUnavailable."""
        await self._db.run_in_transaction(self._release, lease)

    def _acquire(self, conn: Connection, name: str) -> Lease | None:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_CLASS, _signed32(zlib.crc32(name.encode())))))
        query = select(singleton_leases).where(singleton_leases.c.name == name)
        row = conn.execute(query if sqlite else query.with_for_update()).first()
        now = database_now(conn)
        expires = now + self._ttl
        if row is None:
            conn.execute(
                insert(singleton_leases).values(name=name, holder=self.replica, epoch=1, acquired_at=now,
                                                expires_at=expires)
            )  # fmt: skip
            return Lease(name, self.replica, 1, expires)
        ours = row.holder == self.replica
        if not ours and row.expires_at > now and not sqlite:
            return None
        epoch = int(row.epoch) + 1
        conn.execute(
            update(singleton_leases)
            .where(singleton_leases.c.name == name)
            .values(holder=self.replica, epoch=epoch, acquired_at=now, expires_at=expires)
        )
        return Lease(
            name, self.replica, epoch, expires, taken_from=None if ours else str(row.holder),
            position=row.position, position_at=row.position_at,
        )  # fmt: skip

    def _renew(self, conn: Connection, lease: Lease) -> Lease | None:
        now = database_now(conn)
        expires = now + self._ttl
        done = conn.execute(
            update(singleton_leases)
            .where(
                singleton_leases.c.name == lease.name,
                singleton_leases.c.holder == lease.holder,
                singleton_leases.c.epoch == lease.epoch,
                singleton_leases.c.expires_at > now,
            )
            .values(expires_at=expires)
        )
        if done.rowcount != 1:
            return None
        return Lease(lease.name, lease.holder, lease.epoch, expires, lease.taken_from, lease.position,
                     lease.position_at)  # fmt: skip

    def _advance(self, conn: Connection, lease: Lease, position: int) -> None:
        now = database_now(conn)
        column = singleton_leases.c.position
        done = conn.execute(
            update(singleton_leases)
            .where(
                singleton_leases.c.name == lease.name,
                singleton_leases.c.holder == lease.holder,
                singleton_leases.c.epoch == lease.epoch,
                singleton_leases.c.expires_at > now,
            )
            .values(position=func.coalesce(func.greatest(column, position) if conn.dialect.name != "sqlite"
                                           else func.max(column, position), position),
                    position_at=now)
        )  # fmt: skip
        if done.rowcount != 1:
            raise LeaseLost(f"lease {lease.name!r} epoch {lease.epoch} is no longer held by {lease.holder}")

    def _release(self, conn: Connection, lease: Lease) -> None:
        now = database_now(conn)
        conn.execute(
            update(singleton_leases)
            .where(
                singleton_leases.c.name == lease.name,
                singleton_leases.c.holder == lease.holder,
                singleton_leases.c.epoch == lease.epoch,
            )
            .values(expires_at=now)
        )


def _signed32(value: int) -> int:
    """An unsigned CRC-32 as the signed int4 `pg_advisory_xact_lock(int4, int4)` takes."""
    return value - (1 << 32) if value >= 1 << 31 else value
