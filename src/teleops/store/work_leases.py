"""Leases on work rows (outbox rows, heartbeat checks) claimed by one of several controller replicas.

A replica claims a row by writing its name (`Database.replica`) and a lease end on it; the lease end is computed
by the DATABASE's clock (`now()` in the claiming statement), never by a replica's, so replicas whose clocks differ
agree on when a lease has expired. A replica that dies or stalls stops renewing: once its lease has expired another
replica may claim the row, which moves the row's claim epoch on, so the stalled one's late result is refused
(fenced completion: the write that records the outcome names the epoch it claimed).

SQLite is the embedded single-process default: only one replica ever runs on it, so a claim left by another
replica is one from a process that is gone (a restart) and may be taken at once, as before leases existed; the
lease end is not written there and the statements stay as cheap as they were.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, bindparam, func
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "DEFAULT_WORK_LEASE",
    "REPLICA_OPTION",
    "WORK_LEASE_OPTION",
    "db_now",
    "lease_end",
    "replica_of",
    "work_lease_of",
]

# The execution option under which `Database` puts its replica name on every connection it hands out, so store
# functions that take only a Connection (an ingest hook's `take_heads`) claim under the right name.
REPLICA_OPTION = "teleops_replica"
# And its work lease (`database.work_lease`): how long a claim holds a row without a renewal.
WORK_LEASE_OPTION = "teleops_work_lease"
DEFAULT_WORK_LEASE = timedelta(seconds=10)


def db_now() -> ColumnElement[Any]:
    """PostgreSQL's current time as naive UTC, the form the store keeps every timestamp in (UTCDateTime)."""
    return func.timezone("UTC", func.now())


def lease_end() -> ColumnElement[Any]:
    """A lease that ends one work lease from now by the database's clock (PostgreSQL); the statement takes it as
    the parameter `work_lease` (`Database.work_lease`, or `work_lease_of(conn)`).

    Counted from `clock_timestamp()`, the time the claiming statement runs, not from `now()`, the start of its
    transaction: an ingest batch claims its rows in its last statement, and its replica counts the lease from the
    hand-over just after the commit. From `now()` a long transaction would eat into the lease unseen, and a replica
    could trust its claim after the database had let it go. Comparisons (`lease_until <= db_now()`) keep `now()`:
    an earlier time, so a lease is never seen as over too soon."""
    return func.timezone("UTC", func.clock_timestamp()) + bindparam("work_lease", type_=Interval())


def replica_of(conn: Connection) -> str:
    """The replica name of the Database that opened `conn` (empty for a connection opened elsewhere, e.g. a tool)."""
    return str(conn.get_execution_options().get(REPLICA_OPTION, ""))


def work_lease_of(conn: Connection) -> timedelta:
    """The work lease of the Database that opened `conn` (the default for a connection opened elsewhere)."""
    lease = conn.get_execution_options().get(WORK_LEASE_OPTION, DEFAULT_WORK_LEASE)
    return lease if isinstance(lease, timedelta) else DEFAULT_WORK_LEASE
