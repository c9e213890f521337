"""Singleton leases in the database, seen from several replicas: each `Database` here is one replica's view of the
same PostgreSQL (its own engine, pool and `replica` name), as two `teleops serve` processes would have."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

from teleops.server.metrics import Metrics
from teleops.server.singletons import Singletons
from teleops.store.database import Database
from teleops.store.leases import Lease, LeaseLost, LeaseStore, fence
from teleops.store.retention import prune_raw_alerts
from teleops.store.schema import alerts
from tests.conftest import Api, FakeClock
from tests.integration.servers import PostgresServer
from tests.settings import settings_with

TTL = timedelta(seconds=2)


@pytest.fixture
async def replicas(postgres_server: PostgresServer) -> AsyncIterator[list[Database]]:
    """Three replicas' connections to one migrated PostgreSQL database."""
    url = postgres_server.create_database()
    databases = [Database(url) for _ in range(3)]
    yield databases
    for database in databases:
        await database.close()
    postgres_server.drop_database(url)


async def test_a_held_lease_is_exclusive(replicas: list[Database]) -> None:
    a, b, _ = (LeaseStore(db, ttl=TTL) for db in replicas)
    held = await a.acquire("telegram-poller")
    assert held is not None
    assert held.epoch == 1
    assert held.holder == replicas[0].replica
    assert await b.acquire("telegram-poller") is None
    assert await a.check(held)
    other = await b.acquire("housekeeping")  # another singleton is another lease
    assert other is not None
    assert other.holder == replicas[1].replica


async def test_replicas_racing_for_a_free_lease_get_exactly_one_holder(replicas: list[Database]) -> None:
    stores = [LeaseStore(db, ttl=TTL) for db in replicas]
    for _ in range(5):
        name = f"race-{time.monotonic_ns()}"
        results = await asyncio.gather(*(store.acquire(name) for store in stores for _ in range(3)))
        winners = {lease.holder for lease in results if lease is not None}
        assert len(winners) == 1, results
        # The winner's own concurrent tries re-take it with new epochs; the last one taken is the one held.
        held = [lease for lease in results if lease is not None]
        assert sorted(lease.epoch for lease in held) == list(range(1, len(held) + 1))


async def test_an_expired_lease_is_taken_over_with_a_new_epoch_and_fences_the_old_holder(
    replicas: list[Database],
) -> None:
    a, b, _ = (LeaseStore(db, ttl=TTL) for db in replicas)
    old = await a.acquire("telegram-poller")
    assert old is not None
    await a.advance(old, 1005)
    started = time.monotonic()
    new = None
    while new is None:
        new = await b.acquire("telegram-poller")
        await asyncio.sleep(0.05)
    waited = time.monotonic() - started
    assert waited >= TTL.total_seconds() - 0.3  # not before it expired (by the database clock)
    assert new.epoch == old.epoch + 1
    assert new.taken_from == replicas[0].replica
    assert new.position == 1005  # the new holder starts where the old one recorded it was

    # The old holder acts as if nothing happened (a replica resumed after SIGSTOP): every action is refused.
    assert not await a.check(old)
    with pytest.raises(LeaseLost):
        await a.advance(old, 2000)
    assert await a.renew(old) is None
    await replicas[0].run_in_transaction(lambda conn: conn.execute(text("CREATE TABLE fenced_writes (n int)")))
    with pytest.raises(LeaseLost):
        await replicas[0].run_in_transaction(_fenced_write, old)
    assert await replicas[0].scalar(text("SELECT count(*) FROM fenced_writes")) == 0
    # ... and the new holder's lease is untouched by those attempts.
    assert await b.check(new)
    renewed = await b.renew(new)
    assert renewed is not None
    assert renewed.expires_at > new.expires_at
    await b.advance(new, 1003)  # progress never goes backwards
    again = await LeaseStore(replicas[2], ttl=TTL).acquire("telegram-poller")
    assert again is None


async def test_expiry_is_judged_by_the_database_clock(replicas: list[Database]) -> None:
    """The row's expiry moved into the past by the database's own clock: taken at once, although the holder's
    TTL has not passed on any replica's clock."""
    a, b, _ = (LeaseStore(db, ttl=timedelta(minutes=5)) for db in replicas)
    held = await a.acquire("housekeeping")
    assert held is not None
    assert await b.acquire("housekeeping") is None
    await replicas[2].run_in_transaction(
        lambda conn: conn.execute(
            text("UPDATE singleton_leases SET expires_at = (clock_timestamp() AT TIME ZONE 'UTC') - interval '1 ms'")
        )
    )
    taken = await b.acquire("housekeeping")
    assert taken is not None
    assert taken.epoch == held.epoch + 1
    assert not await a.check(held)


async def test_a_released_lease_is_taken_at_once_and_a_release_by_a_stale_holder_does_nothing(
    replicas: list[Database],
) -> None:
    a, b, c = (LeaseStore(db, ttl=timedelta(minutes=5)) for db in replicas)
    held = await a.acquire("deadman-pinger")
    assert held is not None
    await a.release(held)
    taken = await b.acquire("deadman-pinger")
    assert taken is not None
    assert taken.taken_from == replicas[0].replica
    await a.release(held)  # stale: b keeps it
    assert await b.check(taken)
    assert await c.acquire("deadman-pinger") is None


async def test_a_takeover_waits_for_a_fenced_transaction_in_flight(replicas: list[Database]) -> None:
    """A fenced action share-locks the lease row: a takeover cannot start until that action has committed, so a
    stale holder's write never lands after the new holder began."""
    a, b, _ = (LeaseStore(db, ttl=timedelta(seconds=1)) for db in replicas)
    held = await a.acquire("housekeeping")
    assert held is not None
    committed_at: list[float] = []

    def slow_fenced_action(conn: Connection, lease: Lease) -> None:
        fence(conn, lease)
        conn.execute(text("SELECT pg_sleep(1.5)"))  # the lease expires meanwhile
        committed_at.append(time.monotonic())

    action = asyncio.create_task(replicas[0].run_in_transaction(slow_fenced_action, held))
    await asyncio.sleep(1.2)  # expired by now, while the fenced action still runs
    taken = await b.acquire("housekeeping")
    taken_at = time.monotonic()
    await action
    assert taken is not None
    assert committed_at
    assert committed_at[0] <= taken_at


def _fenced_write(conn: Connection, lease: Lease) -> None:
    conn.execute(text("INSERT INTO fenced_writes VALUES (1)"))
    fence(conn, lease)  # raises: the whole transaction is rolled back


async def test_sqlite_one_process_takes_a_lease_left_by_an_earlier_process_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/teleops.db"
    earlier, now = Database(url), Database(url)
    try:
        await earlier.migrate()
        left = await LeaseStore(earlier, ttl=timedelta(minutes=5)).acquire("telegram-poller")
        assert left is not None
        await earlier.close()  # the earlier process died holding it
        store = LeaseStore(now, ttl=timedelta(minutes=5))
        held = await store.acquire("telegram-poller")
        assert held is not None
        assert held.epoch == 2
        assert not await store.check(left)
        assert await store.check(held)
        await store.advance(held, 7)
        renewed = await store.renew(held)
        assert renewed is not None
    finally:
        await now.close()


async def test_housekeeping_under_a_lease_it_lost_deletes_nothing(api: Api, clock: FakeClock, db_url: str) -> None:
    """Retention's deletes are fenced: a replica whose housekeeping lease was taken over (it froze, another one
    took it) prunes nothing when it wakes, and the new holder prunes. On SQLite and PostgreSQL alike."""
    db = api.services.db
    for number in range(5):
        body = {"summary": f"Disk / is {90 + number}% full", "host": "web-1", "check": "DiskFull",
                "severity": "critical", "status": "firing"}  # fmt: skip
        assert (await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)).is_success
        clock.advance(minutes=1)
    body["status"] = "resolved"
    assert (await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)).is_success
    clock.advance(days=20)
    reports = select(func.count()).select_from(alerts)
    before = await db.scalar(reports)

    other_replica = Database(db_url)
    try:
        mine = LeaseStore(db, ttl=timedelta(minutes=5))
        stale = await mine.acquire("housekeeping-test")
        assert stale is not None
        await mine.release(stale)  # as if it had expired while this replica was frozen
        taken = await LeaseStore(other_replica, ttl=timedelta(minutes=5)).acquire("housekeeping-test")
        assert taken is not None
        with pytest.raises(LeaseLost):
            await prune_raw_alerts(db, cutoff=clock() - timedelta(days=14), now=clock(), lease=stale)
        assert await db.scalar(reports) == before
        pruned = await prune_raw_alerts(other_replica, cutoff=clock() - timedelta(days=14), now=clock(), lease=taken)
        assert pruned.alerts_deleted == before - 2  # the first and last report stay
        assert await db.scalar(reports) == 2
    finally:
        await other_replica.close()


@pytest.mark.parametrize("key", ["singleton_lease_ttl", "work_lease"])
@pytest.mark.parametrize("length", ["1s", "10m"])
def test_a_lease_outside_3s_to_5m_is_refused_naming_the_key(key: str, length: str) -> None:
    with pytest.raises(ValidationError, match=rf"database\.{key}[\s\S]*between 3s and 5m"):
        settings_with(database={key: length})


async def test_the_leases_default_to_10s_so_a_failover_takes_at_most_about_12s(tmp_path: Path) -> None:
    database = settings_with().database
    assert database.singleton_lease_ttl.seconds == database.work_lease.seconds == 10
    shorter = settings_with(database={"url": f"sqlite+aiosqlite:///{tmp_path}/t.db", "work_lease": "3s"}).database
    db = Database.from_settings(shorter)
    try:
        assert db.work_lease == timedelta(seconds=3)
    finally:
        await db.close()


async def test_a_holder_whose_lease_was_taken_unnoticed_is_refused_at_its_next_action_and_stands_by(
    replicas: list[Database],
) -> None:
    """What the dead-man's-switch pinger asks right before each ping (`Singletons.confirm`): a replica whose lease
    expired without it noticing (frozen, or minutes between renewals) learns it there, acts not, and stands by."""
    metrics = Metrics()
    holder = Singletons(LeaseStore(replicas[0], ttl=timedelta(minutes=5)), metrics=metrics)
    holder.add("deadman-pinger")
    await holder.start()
    try:
        assert holder.states() == {"deadman-pinger": "held"}
        assert await holder.confirm("deadman-pinger") is not None
        await replicas[2].run_in_transaction(
            lambda conn: conn.execute(
                text(
                    "UPDATE singleton_leases SET expires_at = (clock_timestamp() AT TIME ZONE 'UTC') - interval '1 ms'"
                )
            )
        )
        taken = await LeaseStore(replicas[1], ttl=timedelta(minutes=5)).acquire("deadman-pinger")
        assert taken is not None
        assert holder.held("deadman-pinger") is not None  # its own belief, until it asks the database
        assert await holder.confirm("deadman-pinger") is None
        for _ in range(100):
            if holder.states() == {"deadman-pinger": "standby"}:
                break
            await asyncio.sleep(0.02)
        assert holder.states() == {"deadman-pinger": "standby"}
        lost = {"singleton": "deadman-pinger", "reason": "expired"}
        assert metrics.registry.get_sample_value("teleops_singleton_losses_total", lost) == 1
    finally:
        await holder.stop()
    assert await LeaseStore(replicas[1], ttl=timedelta(minutes=5)).check(taken)  # stopping released nothing of B's
