"""Work claimed under expiring leases, with two or three real `teleops serve` replicas on one real PostgreSQL, the
official Telegram client against the fake Bot API, and kill -9 / SIGSTOP by PID (issue #23.2).

- kill -9 of a replica with sends in flight: every outbox message reaches Telegram at least once; duplicates only
  for rows the killed replica had in flight (the platform accepted them, the record never came: the documented
  at-least-once window), counted and printed.
- kill -9 or SIGSTOP of a replica while escalations run: every step of every incident is run once (its pages rows
  and timeline), none lost, none doubled; every page reaches its person.
- 1,000 concurrent incident updates (firing, repeated, acked, resolved) spread over three replicas: consistent
  counts of incidents, events and outbox rows.
- a missed heartbeat watched by two replicas opens one incident, which stays open, and is announced once.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import and_, func, select

from teleops.store.database import Database
from teleops.store.schema import heartbeats, incidents, outbox, pages, timeline
from tests.fakes.telegram import FakeTelegram
from tests.integration.servers import PostgresServer, TeleopsServer, start_teleops, stop_process
from tests.scenarios.conftest import FIRING, eventually

pytestmark = pytest.mark.timeout(600)

ALERT_CHATS = [501, 502, 503, 504]  # private chats: one message a second each, no group limit
PEOPLE = {"alice": 1001, "bob": 1002, "carol": 1003}


@asynccontextmanager
async def _replicas(
    postgres_server: PostgresServer, tmp_path: Path, config: dict[str, Any], count: int
) -> AsyncIterator[tuple[list[TeleopsServer], Database]]:
    """`count` replicas on one new PostgreSQL database: the first, then the others at once with its key files
    (in threads: they call this loop's fake Telegram while they boot), and a Database to read what they wrote.
    Stopped by PID at the end."""
    url = postgres_server.create_database()
    first = await asyncio.to_thread(start_teleops, tmp_path / "replica-0", database_url=url, config=config)
    others = await asyncio.gather(
        *(
            asyncio.to_thread(
                start_teleops, tmp_path / f"replica-{n}", database_url=url, config=config, keys_from=first
            )
            for n in range(1, count)
        )
    )
    servers = [first, *others]
    db = Database(url)
    try:
        yield servers, db
    finally:
        for server in servers:
            if server.process.poll() is None:
                os.kill(server.process.pid, signal.SIGCONT)
            stop_process(server.process)
        await db.close()
        postgres_server.drop_database(url)


def _config(fake: FakeTelegram, **sections: Any) -> dict[str, Any]:
    telegram = {
        "token": fake.token,
        "base_url": fake.base_url,
        "poll_timeout": "1s",
        "storm_threshold": 100000,  # every announcement is its own message: counts stay exact
        **sections.pop("telegram", {}),
    }
    return {"telegram": telegram, **sections}


def _body(name: str, fingerprint: str, *, resolved: bool = False) -> bytes:
    body = json.loads(FIRING.read_text())
    alert = copy.deepcopy(body["alerts"][0])
    alert["labels"] = {**alert["labels"], "alertname": name}
    alert["fingerprint"] = fingerprint
    if resolved:
        alert["status"] = body["status"] = "resolved"
        alert["endsAt"] = "2026-11-25T10:00:00Z"
    body["alerts"] = [alert]
    return json.dumps(body).encode()


async def _post(client: httpx.AsyncClient, server: TeleopsServer, body: bytes) -> dict[str, Any]:
    response = await client.post(
        f"{server.url}/api/v1/alerts/alertmanager",
        content=body,
        headers={**server.ingest_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


def _holder(server: TeleopsServer) -> str:
    """The replica name of `server` as claims record it (host/pid/random): matched by its pid."""
    return f"%/{server.process.pid}/%"


async def _scalar(db: Database, query: Any) -> Any:
    return await db.scalar(query)


def _titles(fake: FakeTelegram, chat: int) -> Counter[str]:
    return Counter(m.text.split("\n")[0] for m in fake.chat_messages(chat))


def _named(counts: Counter[str], name: str) -> int:
    return sum(n for title, n in counts.items() if name in title)


async def test_kill_9_with_sends_in_flight_hands_the_rows_over_and_duplicates_only_those_in_flight(
    postgres_server: PostgresServer, tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    config = _config(fake_telegram, telegram={"alert_chats": ALERT_CHATS})
    async with _replicas(postgres_server, tmp_path, config, 2) as ((a, b), db):
        # Telegram takes each message at once but answers a second later: the window in which a replica that dies
        # has posted without knowing it.
        fake_telegram.answer_delay_s["sendMessage"] = 1.0
        names = [f"Alert{n:02d}" for n in range(8)]
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(
                *(_post(client, (a, b)[n % 2], _body(name, f"fp-{name}")) for n, name in enumerate(names))
            )
        on_a = and_(outbox.c.status == "sending", outbox.c.claimed_by.like(_holder(a)))
        in_flight_on_a = select(func.count()).select_from(outbox).where(on_a)
        await eventually(lambda: _scalar(db, in_flight_on_a), what="a send in flight on replica A", timeout=60)
        await asyncio.sleep(0.5)  # inside the second Telegram takes to answer
        held = {int(r.id) for r in await db.all(select(outbox.c.id).where(on_a))}
        a.process.kill()
        killed_at = time.monotonic()
        await asyncio.to_thread(a.process.wait, 10)
        held |= {int(r.id) for r in await db.all(select(outbox.c.id).where(on_a))}
        held_at_kill = len(held)
        await eventually(lambda: _all_sent(db, held), what="the killed replica's rows delivered", timeout=60)
        handed_over_s = time.monotonic() - killed_at

        await eventually(lambda: _none_left(db), what="every outbox row sent by the surviving replica", timeout=120)
        taken_over = int(
            await _scalar(
                db,
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.claimed_by.like(_holder(b)), outbox.c.claim_epoch >= 2),
            )
        )
    duplicates = 0
    for chat in ALERT_CHATS:
        counts = _titles(fake_telegram, chat)
        for name in names:
            delivered = _named(counts, name)
            assert delivered >= 1, f"{name} never reached chat {chat}: {counts}"
            duplicates += delivered - 1
    print(
        f"\nkill -9 mid-delivery: {len(names) * len(ALERT_CHATS)} messages, {held_at_kill} in flight on the killed "
        f"replica, {duplicates} posted twice, {taken_over} rows taken over by the survivor, all of them delivered "
        f"{handed_over_s:.1f} s after the kill"
    )
    assert duplicates <= held_at_kill  # only rows the killed replica had in flight may be posted twice
    assert held_at_kill >= 1


async def test_a_replica_frozen_with_sends_in_flight_does_not_act_on_the_leases_it_lost(
    postgres_server: PostgresServer, tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    config = _config(fake_telegram, telegram={"alert_chats": ALERT_CHATS})
    async with _replicas(postgres_server, tmp_path, config, 2) as ((a, b), db):
        fake_telegram.answer_delay_s["sendMessage"] = 1.0
        names = [f"Frozen{n:02d}" for n in range(8)]
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(
                *(_post(client, (a, b)[n % 2], _body(name, f"fp-{name}")) for n, name in enumerate(names))
            )
        held_by_a = select(outbox.c.id).where(outbox.c.status == "sending", outbox.c.claimed_by.like(_holder(a)))
        held: set[int] = set()
        for _attempt in range(10):  # freeze A while it holds a send; on a busy machine its send may end first
            await eventually(lambda: db.all(held_by_a), what="a send in flight on replica A", timeout=60)
            await asyncio.sleep(0.3)  # inside the second Telegram takes to answer
            os.kill(a.process.pid, signal.SIGSTOP)
            held = {int(r.id) for r in await db.all(held_by_a)}
            if held:
                break
            os.kill(a.process.pid, signal.SIGCONT)
        assert held, "replica A finished each of its sends before it was frozen: nothing was in flight to lose"
        # Frozen past its leases: the other replica takes the rows over and delivers them.
        await eventually(
            lambda: _all_sent(db, held), what="the frozen replica's rows delivered by the other", timeout=60
        )
        os.kill(a.process.pid, signal.SIGCONT)  # it wakes up believing it still holds them
        await eventually(lambda: _none_left(db), what="every outbox row sent", timeout=120)

        def refusals() -> int:
            log = a.log.read_text()
            return log.count("outbox.claim_lost") + log.count("outbox.lease_expired_before_send")

        # The woken replica tries its late outcomes (or sends) and is refused; a busy machine may take a while.
        await eventually(lambda: refusals() > 0, what="the woken replica's late outcomes refused", timeout=30)
        await asyncio.sleep(1)  # any further late outcome of the same wake-up
        owners = await db.all(select(outbox.c.id, outbox.c.claimed_by).where(outbox.c.id.in_(held)))
        taken_by_b = await asyncio.to_thread(b.metric, "teleops_outbox_claims_total", result="taken")
    refused = refusals()
    assert taken_by_b >= len(held)  # /metrics counts the claims, the frozen replica's rows among them
    duplicates = sum(max(_named(_titles(fake_telegram, chat), name) - 1, 0) for chat in ALERT_CHATS for name in names)
    for chat in ALERT_CHATS:
        for name in names:
            assert _named(_titles(fake_telegram, chat), name) >= 1, f"{name} never reached chat {chat}"
    print(
        f"\nSIGSTOP mid-delivery: {len(held)} rows in flight on the frozen replica, all delivered by the other; "
        f"{refused} late outcomes or sends refused on waking; {duplicates} posted twice"
    )
    # Not one of the rows it lost records the frozen replica's word: each is the other replica's, as it sent it.
    assert {o.claimed_by.split("/")[1] for o in owners} == {str(b.process.pid)}
    assert 1 <= refused <= len(held)
    assert duplicates <= len(held)


async def _all_sent(db: Database, ids: set[int]) -> bool:
    rows = await db.all(select(outbox.c.status).where(outbox.c.id.in_(ids)))
    return len(rows) == len(ids) and {r.status for r in rows} == {"sent"}


async def _none_left(db: Database) -> bool:
    left = await db.scalar(select(func.count()).select_from(outbox).where(outbox.c.status != "sent"))
    return int(left) == 0


def _oncall_config(fake: FakeTelegram) -> dict[str, Any]:
    return _config(
        fake,
        users=[{"name": name, "role": "operator", "telegram_id": tg} for name, tg in PEOPLE.items()],
        oncall={
            "escalation": [
                {"after": "0m", "notify": "user:alice"},
                {"after": "4s", "notify": "user:bob"},
                {"after": "8s", "notify": "user:carol"},
            ],
            "delivery_deadline": "10m",
        },
    )


@pytest.mark.parametrize("fault", ["kill -9", "SIGSTOP"])
async def test_a_replica_killed_or_frozen_mid_escalation_loses_and_doubles_no_step(
    postgres_server: PostgresServer, tmp_path: Path, fake_telegram: FakeTelegram, fault: str
) -> None:
    async with _replicas(postgres_server, tmp_path, _oncall_config(fake_telegram), 2) as ((a, b), db):
        names = [f"Esc{n:02d}" for n in range(16)]
        async with httpx.AsyncClient(timeout=30) as client:
            for n, name in enumerate(names):  # spread over 4 s: some passes of each replica run at any moment
                await _post(client, (a, b)[n % 2], _body(name, f"fp-{name}"))
                await asyncio.sleep(0.25)
        await asyncio.sleep(2.0)  # the second steps start coming due
        if fault == "kill -9":
            a.process.kill()
            await asyncio.to_thread(a.process.wait, 10)
        else:
            os.kill(a.process.pid, signal.SIGSTOP)
            await asyncio.sleep(7)  # past the escalation pass's limit (5 s) and the outbox lease (TEST_LEASES: 5 s)
            os.kill(a.process.pid, signal.SIGCONT)

        every_step = select(func.count()).select_from(pages).where(pages.c.state == "delivered")
        await eventually(
            lambda: _at_least(db, every_step, 3 * len(names)), what="every step of every escalation", timeout=120
        )
        await asyncio.sleep(3)  # anything doubled would show by now
        rows = (await db.all(select(pages.c.incident_id, pages.c.step, pages.c.round, pages.c.state))) or []
        events = await db.all(
            select(timeline.c.incident_id, timeline.c.kind, timeline.c.data).where(
                timeline.c.kind.in_(["notified", "escalated"])
            )
        )
    per_step = Counter((r.incident_id, r.step, r.round) for r in rows)
    assert len(per_step) == 3 * len(names)  # no step lost
    assert set(per_step.values()) == {1}, per_step  # no step doubled
    steps = Counter((e.incident_id, e.data["step"]) for e in events)
    assert len(steps) == 3 * len(names)
    assert set(steps.values()) == {1}, steps
    duplicates = 0
    for person, chat in PEOPLE.items():
        counts = _titles(fake_telegram, chat)
        for name in names:
            delivered = _named(counts, name)
            assert delivered >= 1, f"{person} was never paged for {name}"
            duplicates += delivered - 1
    print(f"\n{fault} mid-escalation: {3 * len(names)} steps run once each; pages posted twice: {duplicates}")
    if fault == "SIGSTOP":
        assert duplicates == 0  # frozen before or after its calls: fenced, nothing sent twice


async def _at_least(db: Database, query: Any, count: int) -> bool:
    return int(await db.scalar(query)) >= count


async def test_a_thousand_concurrent_updates_over_three_replicas_give_consistent_counts(
    postgres_server: PostgresServer, tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    config = _config(fake_telegram, telegram={"alert_chats": [ALERT_CHATS[0]]})
    fingerprints = [f"fp-{n:03d}" for n in range(250)]
    async with _replicas(postgres_server, tmp_path, config, 3) as (servers, db):
        limit = asyncio.Semaphore(48)

        async def lifecycle(client: httpx.AsyncClient, n: int, fingerprint: str) -> None:
            """Four updates of one incident, each through another replica: fires, fires again, acked, resolved."""
            first, second, third = (servers[(n + k) % 3] for k in range(3))
            name = f"Upd{n:03d}"
            async with limit:
                incident_id = int((await _post(client, first, _body(name, fingerprint)))["incident_id"])
            async with limit:
                again = await _post(client, second, _body(name, fingerprint))
                assert int(again["incident_id"]) == incident_id
            async with limit:
                acked = await client.post(
                    f"{third.url}/api/v1/incidents/{incident_id}/ack", headers=third.api_headers, json={}
                )
                assert acked.status_code == 200, acked.text
            async with limit:
                await _post(client, first, _body(name, fingerprint, resolved=True))

        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(lifecycle(client, n, fp) for n, fp in enumerate(fingerprints)))

        rows = await db.all(
            select(incidents.c.id, incidents.c.status, incidents.c.count.label("seen"), incidents.c.acknowledged_by)
        )
        kinds = await db.all(select(timeline.c.incident_id, timeline.c.kind))
        announcements = await db.all(
            select(outbox.c.incident_id, outbox.c.chat_id, outbox.c.ref_id).where(
                outbox.c.kind == "send", outbox.c.platform == "telegram"
            )
        )
    assert len(rows) == len(fingerprints)
    assert {r.status for r in rows} == {"resolved"}
    assert {r.seen for r in rows} == {2}
    assert {r.acknowledged_by for r in rows} == {"admin"}
    per_kind = Counter(k.kind for k in kinds)
    per_incident: dict[int, Counter[str]] = {}
    for event in kinds:
        per_incident.setdefault(event.incident_id, Counter())[event.kind] += 1
    assert per_kind["incident.acknowledged"] == len(fingerprints), per_kind
    assert per_kind["alert.fired"] == len(fingerprints), per_kind
    # Every incident went through the same four updates: each has the very same events, once each where once.
    shapes = Counter(tuple(sorted(c.items())) for c in per_incident.values())
    assert len(per_incident) == len(fingerprints)
    assert len(shapes) == 1, shapes
    # Per incident and alert chat: one announcement, and one reply to it when it was resolved.
    per_announcement = Counter((a.incident_id, a.chat_id, a.ref_id is None) for a in announcements)
    assert len(per_announcement) == 2 * len(fingerprints)
    assert set(per_announcement.values()) == {1}
    print(f"\n1,000 updates over 3 replicas: {len(rows)} incidents, events {dict(per_kind)}")


async def test_a_missed_heartbeat_watched_by_two_replicas_opens_one_incident_that_stays_open(
    postgres_server: PostgresServer, tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    config = _config(
        fake_telegram,
        telegram={"alert_chats": [ALERT_CHATS[0]]},
        heartbeats=[{"name": "nightly", "interval": "4s", "grace": "4s"}],
    )
    async with _replicas(postgres_server, tmp_path, config, 2) as (_servers, db):
        opened = select(incidents.c.id, incidents.c.status).where(incidents.c.source == "heartbeat")
        await eventually(lambda: db.all(opened), what="the missed heartbeat's incident", timeout=60)
        await eventually(lambda: _titles(fake_telegram, ALERT_CHATS[0]), what="the incident's announcement", timeout=30)
        await asyncio.sleep(8)  # both replicas have swept past the due time several times
        rows = await db.all(opened)
        late = await db.first(select(heartbeats.c.late_since, heartbeats.c.check_claimed_by))
    assert [r.status for r in rows] == ["open"]  # one incident, not taken back by the replica that lost the claim
    assert late is not None
    assert late.late_since is not None
    assert late.check_claimed_by is None
    assert _named(_titles(fake_telegram, ALERT_CHATS[0]), "nightly") == 1
