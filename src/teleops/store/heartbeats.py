"""Heartbeat rows: what is defined (from config or the API), when each last pinged, and whether it is late.

A ping is one UPDATE of `last_ping_at` (and `late_since` back to NULL): no audit record per ping, it would flood
the log; `teleops_heartbeat_pings_total` counts them. Defining and deleting heartbeats through the API is
audited (`heartbeat.defined`, `heartbeat.deleted`) in the same transaction as the row change.

Rows from `heartbeats:` in the config (origin "config") are rewritten at every start; the API may not change or
delete them (HeartbeatFromConfig), since the next start would undo it.

Several replicas on one PostgreSQL each watch every heartbeat. Before a monitor opens the incident of a miss it
claims the check (`claim_check`: `check_claimed_by`, and `check_lease_until` by the database's clock, one work
lease: `database.work_lease`); another replica's live claim makes it stand aside, so one miss opens one incident.
A replica that dies between its claim and `mark_late` hands the check over when the lease expires; the next one's
firing alert lands on the incident already open, if any (same fingerprint), so nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Row

from teleops.config.heartbeats import HeartbeatSettings, HeartbeatSpec
from teleops.domain.heartbeat import HeartbeatState, HeartbeatTiming, state_of
from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import heartbeats
from teleops.store.work_leases import db_now, lease_end

__all__ = [
    "CONFIG_ORIGIN",
    "HeartbeatFromConfig",
    "HeartbeatNotFound",
    "HeartbeatRecord",
    "HeartbeatStore",
]

CONFIG_ORIGIN = "config"
API_ORIGIN = "api"


class HeartbeatNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"no heartbeat named {name!r}; define it under `heartbeats:` in teleops.yaml or with "
            f"PUT /api/v1/heartbeats/{name} (admin token), then ping again"
        )


class HeartbeatFromConfig(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"heartbeat {name!r} is defined in the config file (heartbeats:); change or remove it there and "
            "restart TeleOps, the API cannot change it"
        )


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    name: str
    origin: str
    spec: HeartbeatSpec
    created_at: datetime
    updated_at: datetime
    last_ping_at: datetime | None
    late_since: datetime | None

    @property
    def timing(self) -> HeartbeatTiming:
        return HeartbeatTiming(
            interval=self.spec.interval.timedelta,
            grace=self.spec.grace.timedelta,
            created_at=self.created_at,
            last_ping_at=self.last_ping_at,
        )

    @property
    def state(self) -> HeartbeatState:
        return state_of(last_ping_at=self.last_ping_at, late=self.late_since is not None)


def _record(row: Row[Any]) -> HeartbeatRecord:
    spec = HeartbeatSpec(
        interval=row.interval,
        grace=row.grace,
        severity=row.severity,
        labels=dict(row.labels or {}),
        description=row.description,
    )
    return HeartbeatRecord(
        name=row.name,
        origin=row.origin,
        spec=spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_ping_at=row.last_ping_at,
        late_since=row.late_since,
    )


def _values(spec: HeartbeatSpec) -> dict[str, Any]:
    return {
        "interval": str(spec.interval),
        "grace": str(spec.grace),
        "severity": spec.severity,
        "labels": dict(spec.labels),
        "description": spec.description,
    }


class HeartbeatStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def work_lease(self) -> timedelta:
        """How long a claim on a check holds (`database.work_lease`): another replica may take it over after."""
        return self._db.work_lease

    async def sync_configured(self, configured: Sequence[HeartbeatSettings], *, now: datetime) -> list[HeartbeatRecord]:
        """Make the config rows match `heartbeats:`: insert new ones, rewrite changed ones (keeping their pings),
        delete those no longer configured. An API row whose name is now in the config becomes a config row.
        Returns the deleted rows (the monitor resolves the incident of any that was late). Raises
        StorageUnavailable."""

        def apply(conn: Connection) -> list[HeartbeatRecord]:
            if conn.dialect.name == "postgresql":
                # Replicas starting together each sync: one after the other, or both would insert a new row.
                conn.execute(text("LOCK TABLE heartbeats IN SHARE ROW EXCLUSIVE MODE"))
            existing = {row.name: row for row in conn.execute(select(heartbeats))}
            wanted = {item.name: item for item in configured}
            for name, item in wanted.items():
                values = {**_values(item), "origin": CONFIG_ORIGIN, "updated_at": now}
                if name in existing:
                    conn.execute(update(heartbeats).where(heartbeats.c.name == name).values(**values))
                else:
                    conn.execute(insert(heartbeats).values(name=name, created_at=now, **values))
            gone = [row for name, row in existing.items() if row.origin == CONFIG_ORIGIN and name not in wanted]
            for row in gone:
                conn.execute(delete(heartbeats).where(heartbeats.c.name == row.name))
            return [_record(row) for row in gone]

        return await self._db.run_in_transaction(apply)

    async def all(self) -> list[HeartbeatRecord]:
        """Every heartbeat, by name. Raises StorageUnavailable."""
        rows = await self._db.all(select(heartbeats).order_by(heartbeats.c.name))
        return [_record(row) for row in rows]

    async def get(self, name: str) -> HeartbeatRecord:
        """The heartbeat `name`. Raises HeartbeatNotFound, StorageUnavailable."""
        row = await self._db.first(select(heartbeats).where(heartbeats.c.name == name))
        if row is None:
            raise HeartbeatNotFound(name)
        return _record(row)

    async def put(self, name: str, spec: HeartbeatSpec, *, now: datetime, actor: str, via: str) -> bool:
        """Define or redefine the API heartbeat `name` (its pings are kept); True when it is new. Audited as
        `heartbeat.defined`. Raises HeartbeatFromConfig (nothing changed), StorageUnavailable, AuditUnavailable."""

        def apply(conn: Connection) -> bool:
            row = conn.execute(select(heartbeats.c.origin).where(heartbeats.c.name == name)).first()
            if row is not None and row.origin == CONFIG_ORIGIN:
                raise HeartbeatFromConfig(name)
            values = {**_values(spec), "origin": API_ORIGIN, "updated_at": now}
            if row is None:
                conn.execute(insert(heartbeats).values(name=name, created_at=now, **values))
            else:
                conn.execute(update(heartbeats).where(heartbeats.c.name == name).values(**values))
            append(
                conn, at=now, actor=actor, action="heartbeat.defined", subject=f"heartbeat:{name}",
                data={**_values(spec), "new": row is None, "via": via},
            )  # fmt: skip
            return row is None

        return await self._db.run_in_transaction(apply)

    async def delete(self, name: str, *, now: datetime, actor: str, via: str) -> HeartbeatRecord:
        """Delete the API heartbeat `name`; returns it as it was. Audited as `heartbeat.deleted`. Raises
        HeartbeatNotFound, HeartbeatFromConfig (nothing changed), StorageUnavailable, AuditUnavailable."""

        def apply(conn: Connection) -> HeartbeatRecord:
            row = conn.execute(select(heartbeats).where(heartbeats.c.name == name)).first()
            if row is None:
                raise HeartbeatNotFound(name)
            if row.origin == CONFIG_ORIGIN:
                raise HeartbeatFromConfig(name)
            conn.execute(delete(heartbeats).where(heartbeats.c.name == name))
            append(
                conn, at=now, actor=actor, action="heartbeat.deleted", subject=f"heartbeat:{name}", data={"via": via}
            )
            return _record(row)

        return await self._db.run_in_transaction(apply)

    async def record_ping(self, name: str, *, now: datetime) -> bool:
        """Set `last_ping_at` of `name` to `now` and clear `late_since`; False when there is no such heartbeat.
        Raises StorageUnavailable."""
        changed = await self._db.write(_ping, name, now)
        return changed > 0

    async def claim_check(self, name: str, *, last_ping_at: datetime | None) -> bool:
        """Claim the opening of the incident for a miss of `name` (this replica, for one work lease: the time to submit
        one firing alert, with room): only while it is not late, has not pinged since `last_ping_at` (what the
        monitor saw), and no other replica holds a live claim on it. False: a ping came in, it is late already, or
        another replica is opening it (stand aside). Raises StorageUnavailable."""
        me = self._db.replica
        free = [heartbeats.c.check_claimed_by.is_(None), heartbeats.c.check_claimed_by == me]
        values: dict[str, Any] = {"check_claimed_by": me}
        if not self._db.is_sqlite:  # SQLite has one process: a claim not its own is from a process that is gone
            free.append(heartbeats.c.check_lease_until <= db_now())
            values["check_lease_until"] = lease_end()
        statement = (
            update(heartbeats)
            .where(heartbeats.c.name == name, heartbeats.c.late_since.is_(None), _pinged_last(last_ping_at))
            .values(**values)
        )
        if not self._db.is_sqlite:
            statement = statement.where(or_(*free))

        params = {} if self._db.is_sqlite else {"work_lease": self._db.work_lease}

        def apply(conn: Connection) -> int:
            return int(conn.execute(statement, params).rowcount)

        return await self._db.run_in_transaction(apply) > 0

    async def mark_late(self, name: str, *, now: datetime, last_ping_at: datetime | None) -> bool:
        """Record the miss of `name`, once: only while it is not late and has not pinged since `last_ping_at` (what
        the monitor saw), and, with several replicas, while this replica's `claim_check` holds (the claim ends here).
        False when a ping came in between, it was already late, or the claim was taken over. Raises
        StorageUnavailable."""
        mine = heartbeats.c.check_claimed_by == self._db.replica
        statement = (
            update(heartbeats)
            .where(heartbeats.c.name == name, heartbeats.c.late_since.is_(None), _pinged_last(last_ping_at))
            .values(late_since=now, check_claimed_by=None, check_lease_until=None)
        )
        if not self._db.is_sqlite:
            statement = statement.where(mine)

        def apply(conn: Connection) -> int:
            return int(conn.execute(statement).rowcount)

        return await self._db.run_in_transaction(apply) > 0


def _pinged_last(last_ping_at: datetime | None) -> Any:
    """The heartbeat's last ping is still `last_ping_at` (None: it never pinged)."""
    if last_ping_at is None:
        return heartbeats.c.last_ping_at.is_(None)
    return heartbeats.c.last_ping_at == last_ping_at


def _ping(conn: Connection, name: str, now: datetime) -> int:
    result = conn.execute(update(heartbeats).where(heartbeats.c.name == name).values(last_ping_at=now, late_since=None))
    return int(result.rowcount)
