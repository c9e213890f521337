"""The claim and lease SQL of work rows, with two `Database`s (two replicas) on one real PostgreSQL (issue #23.2).

Outbox rows: one replica wins a claim, the other gets nothing; a row under another replica's live lease is neither
claimed nor offered; once the lease ends by the database's clock the row is taken over, and the first replica's
late outcome is refused (fenced by the claim's epoch); a row locked by another transaction is skipped, not waited
for. Escalations: a pass's claim lasts while its replica talks to the server; a frozen pass (a transaction left
idle) loses it and cannot commit. Heartbeat checks: one replica opens the incident of a miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from teleops.config.heartbeats import HeartbeatSettings
from teleops.store import escalations
from teleops.store.database import Database
from teleops.store.heartbeats import HeartbeatStore
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_claims import take_heads
from teleops.store.outbox_queue import OutboxStatus, enqueue_send
from teleops.store.schema import heartbeats, incidents, outbox
from tests.integration.servers import PostgresServer

Replicas = tuple[Database, Database]
# The hand-overs below wait one lease: the harness's test lease (tests/integration/servers.py, TEST_LEASES).
LEASE = timedelta(seconds=5)


@pytest.fixture
async def replicas(postgres_server: PostgresServer) -> AsyncIterator[Replicas]:
    url = postgres_server.create_database()
    first, second = Database(url, work_lease=LEASE), Database(url, work_lease=LEASE)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        postgres_server.drop_database(url)


def _now() -> datetime:
    return datetime.now(UTC)


async def _queue(db: Database, chat: str = "c1") -> int:
    store = OutboxStore(db)
    payload = {"message": {"title": "DiskFull"}}
    row_id: int = await store.run(
        lambda conn: enqueue_send(conn, platform="telegram", chat_id=chat, payload=payload, now=_now())
    )
    return row_id


async def _row(db: Database, row_id: int) -> dict[str, object]:
    row = await db.first(select(outbox).where(outbox.c.id == row_id))
    assert row is not None
    return dict(row._mapping)


async def test_two_replicas_claiming_the_same_rows_at_once_each_get_each_row_once(replicas: Replicas) -> None:
    a, b = OutboxStore(replicas[0]), OutboxStore(replicas[1])
    rows = [await _queue(replicas[0], chat=f"c{n}") for n in range(40)]
    results = await asyncio.gather(*(store.take(row, _now()) for row in rows for store in (a, b)))
    won = [(rows[i // 2], i % 2) for i, claim in enumerate(results) if claim is not None]
    assert sorted(row for row, _ in won) == rows  # every row claimed, none twice
    for row_id, winner in won:
        stored = await _row(replicas[0], row_id)
        assert stored["claimed_by"] == replicas[winner].replica
        assert stored["claim_epoch"] == 1
        assert stored["status"] == OutboxStatus.SENDING


async def test_a_row_under_a_live_lease_is_left_alone_and_taken_over_when_it_ends_with_the_late_outcome_refused(
    replicas: Replicas,
) -> None:
    first, second = replicas
    a, b = OutboxStore(first), OutboxStore(second)
    row_id = await _queue(first)
    claim = await a.take(row_id, _now())
    assert claim is not None
    assert claim.epoch == 1

    # The lease runs: the other replica neither claims the row nor is offered its chat.
    assert await b.take(row_id, _now()) is None
    assert await b.next_deliveries("telegram") == []
    assert [d.row.id for d in await a.next_deliveries("telegram")] == [row_id]  # its own claim: offered again
    assert await a.renew([(row_id, claim.epoch)]) == {row_id}

    # The first replica stalls: no renewal. By the database's clock the lease ends, and the row is taken over.
    await asyncio.sleep(LEASE.total_seconds() + 0.5)
    [offered] = await b.next_deliveries("telegram")
    assert offered.row.id == row_id
    assert await offered.claim(_now())
    assert offered.epoch == 2

    # The stalled replica wakes up: its renewal and its outcome are refused; the new owner's stands.
    assert await a.renew([(row_id, claim.epoch)]) == set()
    assert not await a.mark_sent(row_id, "late-1", _now(), epoch=claim.epoch)
    assert a.claims_lost == 1
    assert (await _row(first, row_id))["status"] == OutboxStatus.SENDING
    assert await offered.sent("m-2", _now())
    stored = await _row(first, row_id)
    assert (stored["status"], stored["platform_message_id"], stored["claimed_by"]) == ("sent", "m-2", second.replica)
    assert not await a.mark_failed(row_id, "late", epoch=claim.epoch)
    assert (await _row(first, row_id))["status"] == OutboxStatus.SENT


async def test_a_claim_taken_late_in_a_long_transaction_holds_a_whole_lease_from_the_claim(replicas: Replicas) -> None:
    """The replica counts a row taken at ingest as its own from the hand-over after the commit; the database must
    count the lease from the claiming statement, not from the start of its transaction, or a long batch would eat
    into it unseen."""
    first, _ = replicas

    def slow_batch(conn: Connection) -> tuple[int, float]:
        row_id = enqueue_send(conn, platform="telegram", chat_id="c1", payload={"message": {}}, now=_now())
        conn.execute(text("SELECT pg_sleep(1.5)"))  # a batch that took its time before its last statement
        [taken] = take_heads(conn, [row_id])
        left = conn.execute(
            select(func.extract("epoch", outbox.c.lease_until - func.timezone("UTC", func.clock_timestamp()))).where(
                outbox.c.id == taken.id
            )
        ).scalar_one()
        return taken.id, float(left)

    _row_id, left = await first.write(slow_batch)
    assert LEASE.total_seconds() - 0.5 < left <= LEASE.total_seconds()


async def test_a_row_taken_at_ingest_holds_a_lease_the_other_replica_respects(replicas: Replicas) -> None:
    first, second = replicas

    def queue_and_take(conn: Connection) -> list[int]:
        row_id = enqueue_send(conn, platform="telegram", chat_id="c1", payload={"message": {}}, now=_now())
        return [row.id for row in take_heads(conn, [row_id])]

    [row_id] = await first.write(queue_and_take)
    stored = await _row(first, row_id)
    assert stored["claimed_by"] == first.replica
    assert stored["lease_until"] is not None
    assert stored["claim_epoch"] == 1
    assert await OutboxStore(second).take(row_id, _now()) is None
    assert await OutboxStore(second).next_deliveries("telegram") == []
    # The replica that took it may claim it again (rate limits held it back), under a new epoch.
    again = await OutboxStore(first).take(row_id, _now())
    assert again is not None
    assert again.epoch == 2


async def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for(replicas: Replicas) -> None:
    first, second = replicas
    row_id = await _queue(first)
    async with first.engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(select(outbox.c.id).where(outbox.c.id == row_id).with_for_update())
        async with asyncio.timeout(30):  # waiting for the lock would hang here until the holder ends
            assert await OutboxStore(second).take(row_id, _now()) is None
        await holder.execute(text("ROLLBACK"))
    assert await OutboxStore(second).take(row_id, _now()) is not None


async def _incident_with_escalation(db: Database) -> int:
    now = _now()

    def apply(conn: Connection) -> int:
        result = conn.execute(
            incidents.insert().returning(incidents.c.id).values(
                source="alertmanager", fingerprint="fp", status="open", severity="critical", name="DiskFull",
                labels={}, annotations={}, digest="d", created_at=now, last_seen_at=now,
            )
        )  # fmt: skip
        incident_id = int(result.scalar_one())
        escalations.start(conn, incident_id=incident_id, team="default", now=now, first_due=now)
        return incident_id

    return await db.write(apply)


async def test_an_escalation_pass_frozen_mid_transaction_loses_its_claim_and_cannot_commit(replicas: Replicas) -> None:
    first, second = replicas
    incident_id = await _incident_with_escalation(first)

    # The first replica's pass claims the due escalation, then its process stops talking (frozen mid-pass).
    frozen = await first.engine.connect()
    await frozen.execute(text("BEGIN"))
    await frozen.run_sync(escalations.hold_pass)
    claimed = await frozen.run_sync(escalations.due_escalations, _now())
    assert [e.incident_id for e in claimed] == [incident_id]

    async def second_pass() -> list[int]:
        def apply(conn: Connection) -> list[int]:
            escalations.hold_pass(conn)
            return [e.incident_id for e in escalations.due_escalations(conn, _now())]

        return await second.run_in_transaction(apply)

    assert await second_pass() == []  # claimed elsewhere: skipped, not waited for
    # The server ends the frozen pass's transaction after PASS_IDLE_LIMIT_S; the step is the other replica's now.
    await asyncio.sleep(escalations.PASS_IDLE_LIMIT_S + 1)
    assert await second_pass() == [incident_id]
    # The frozen replica wakes up: whatever it would write is refused, so the step is not done twice.
    with pytest.raises(DBAPIError):
        await frozen.run_sync(
            lambda conn: escalations.save_plan(
                conn, claimed[0].id, state="paging", step=1, round_=0, round_started_at=_now(), due_at=None, now=_now()
            )
        )
    await frozen.close()


async def test_one_replica_opens_the_incident_of_a_missed_heartbeat_and_a_dead_ones_claim_runs_out(
    replicas: Replicas,
) -> None:
    first, second = replicas
    a, b = HeartbeatStore(first), HeartbeatStore(second)
    await a.sync_configured([HeartbeatSettings.model_validate({"name": "backup", "interval": "1m"})], now=_now())
    won = await asyncio.gather(*(s.claim_check("backup", last_ping_at=None) for s in (a, b)))
    assert sorted(won) == [False, True]
    winner, loser = (a, b) if won[0] else (b, a)
    assert not await loser.claim_check("backup", last_ping_at=None)
    assert not await loser.mark_late("backup", now=_now(), last_ping_at=None)  # not its claim
    assert await winner.mark_late("backup", now=_now(), last_ping_at=None)
    assert not await loser.claim_check("backup", last_ping_at=None)  # late already: nothing more to open

    # A replica that claims a check and dies: the check is taken over once its lease ends, not before.
    await a.record_ping("backup", now=_now())
    pinged = (await a.get("backup")).last_ping_at
    assert await a.claim_check("backup", last_ping_at=pinged)
    assert not await b.claim_check("backup", last_ping_at=pinged)
    await asyncio.sleep(LEASE.total_seconds() + 0.5)
    assert await b.claim_check("backup", last_ping_at=pinged)
    row = await second.first(select(heartbeats.c.check_claimed_by).where(heartbeats.c.name == "backup"))
    assert row is not None
    assert row.check_claimed_by == second.replica
    assert not await a.mark_late("backup", now=_now(), last_ping_at=pinged)  # the dead one's late word is refused
    assert await b.mark_late("backup", now=_now(), last_ping_at=pinged)


async def test_sqlite_keeps_one_process_semantics(tmp_path: Path) -> None:
    """On SQLite (one process) a claim left by an earlier process is taken at once, as before leases existed."""
    url = f"sqlite+aiosqlite:///{tmp_path}/teleops.db"
    earlier, later = Database(url), Database(url)
    await earlier.migrate()
    try:
        row_id = await _queue(earlier)
        assert await OutboxStore(earlier).take(row_id, _now()) is not None  # the earlier process dies here
        claim = await OutboxStore(later).take(row_id, _now())
        assert claim is not None
        assert claim.epoch == 2
        assert (await _row(later, row_id))["lease_until"] is None
        assert await OutboxStore(later).mark_sent(row_id, "m", _now(), epoch=claim.epoch)
    finally:
        await earlier.close()
        await later.close()
