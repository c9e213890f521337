"""Restart edges of delivery (issue #19.6).

- A 429's `retry_after` is kept in the outbox row, so a controller restarted before the deadline still sends
  nothing to that chat until then; other chats are not held up.
- kill -9 with a send in flight: the at-least-once window. A message the platform accepted but whose answer had not
  come back (so it was not marked sent) is posted again after the restart, once; a message marked sent is not.
- A storm summary's edits coalesce while they wait; the delivery sends what the row says when it claims it, never
  the older text it read before, so the newest count is never lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from teleops.chat.service import ChatService
from teleops.config import Settings
from teleops.domain.message import Message
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.database import Database
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_queue import OutboxRow, OutboxStatus, enqueue_edit, enqueue_send
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.integration.servers import TeleopsServer, start_teleops, stop_process
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

BLOCKED = -100  # the chat Telegram answers 429 with retry_after=60
FREE = -300  # another chat of the same bot, never limited
RETRY_AFTER_S = 60


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # Telegram dates are real Unix times


def _settings(tmp_path: Path, db_url: str, fake: FakeTelegram, alert_chats: list[int]) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={
            "token": fake.token,
            "base_url": fake.base_url,
            "alert_chats": alert_chats,
            "poll_timeout": "1s",
        },
    )


@asynccontextmanager
async def _controller(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        token = await services.tokens.create(TokenKind.INGEST, f"sender-{clock().timestamp()}", now=clock())
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test", headers=headers) as client:
            yield services, client


async def _post(client: httpx.AsyncClient, name: str, fingerprint: str) -> None:
    response = await client.post("/api/v1/alerts/alertmanager", content=alert_body(name=name, fingerprint=fingerprint))
    assert response.status_code == 200, response.text


def _has(fake: FakeTelegram, chat: int, count: int) -> Callable[[], bool]:
    return lambda: len(fake.chat_messages(chat)) == count


def _sends_to(fake: FakeTelegram, chat: int, *, after: int = 0) -> int:
    """sendMessage calls to `chat` among `fake.calls[after:]` (429s included)."""
    return sum(1 for c in fake.calls[after:] if c.method == "sendMessage" and int(c.params["chat_id"]) == chat)


async def test_retry_after_is_honoured_across_a_controller_restart(
    tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    fake_telegram.fail("sendMessage", status=429, retry_after=RETRY_AFTER_S)
    async with _controller(_settings(tmp_path, db_url, fake_telegram, [BLOCKED]), clock) as (services, client):
        await _post(client, "DiskFull", "before-restart")
        rows = await eventually(
            lambda: _blocked_rows(services), what="the announcement to be retried after the 429", timeout=30
        )
        assert rows[0].blocked_until == clock() + timedelta(seconds=RETRY_AFTER_S)
    assert [c.status for c in fake_telegram.calls_of("sendMessage")] == [429]

    # Restarted 6 s later (the case), now also posting to a chat that is not limited.
    clock.advance(seconds=6)
    restarted = len(fake_telegram.calls)
    settings = _settings(tmp_path, db_url, fake_telegram, [BLOCKED, FREE])
    async with _controller(settings, clock) as (services, client):
        await _post(client, "HighLoad", "after-restart")
        # The free chat gets its message: the worker has read every chat's head since the restart ...
        await eventually(lambda: fake_telegram.chat_messages(FREE), what="the message to the free chat", timeout=30)
        for probe in range(3):  # ... and the passes it makes before the deadline send nothing to the blocked one
            _chat(services).wake()
            await _post(client, "Probe", f"probe-{probe}")
            await eventually(_has(fake_telegram, FREE, probe + 2), what="the probe", timeout=30)
        assert _sends_to(fake_telegram, BLOCKED, after=restarted) == 0
        assert fake_telegram.chat_messages(BLOCKED) == []

        # The deadline passes (on the controller's clock): the blocked chat gets everything, in order, once.
        clock.advance(seconds=RETRY_AFTER_S - 6)
        _chat(services).wake()
        await eventually(
            lambda: len(fake_telegram.chat_messages(BLOCKED)) == 5, what="the blocked chat's messages", timeout=30
        )
    titles = [m.text.split("\n")[0] for m in fake_telegram.chat_messages(BLOCKED)]
    assert ["DiskFull" in titles[0], "HighLoad" in titles[1], "Probe" in titles[2]] == [True, True, True]
    assert _sends_to(fake_telegram, BLOCKED, after=restarted) == 5


def _chat(services: Services) -> ChatService:
    return services.chat


async def _blocked_rows(services: Services) -> list[OutboxRow]:
    rows = await _chat(services).outbox.rows("telegram", str(BLOCKED))
    return [r for r in rows if r.status == OutboxStatus.PENDING and r.blocked_until is not None]


def _statuses(server: TeleopsServer) -> list[str]:
    """The Telegram outbox rows' states, read from the (stopped or running) server's SQLite file."""
    with sqlite3.connect(server.sqlite_path) as conn:
        return [
            str(status)
            for (status,) in conn.execute("SELECT status FROM outbox WHERE platform = 'telegram' ORDER BY id")
        ]


async def _post_to(server: TeleopsServer, name: str, fingerprint: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post(
            "/api/v1/alerts/alertmanager",
            content=alert_body(name=name, fingerprint=fingerprint),
            headers={**server.ingest_headers, "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text


async def test_kill_9_with_a_send_in_flight_posts_that_message_again_once_and_nothing_else(
    tmp_path: Path, fake_telegram: FakeTelegram
) -> None:
    config = {
        "telegram": {"token": fake_telegram.token, "base_url": fake_telegram.base_url, "alert_chats": [BLOCKED]},
    }
    workdir = tmp_path / "controller"
    # Started in a thread: the server calls this loop's fake Telegram while it boots.
    server = await asyncio.to_thread(start_teleops, workdir, config=config)
    try:
        await _post_to(server, "DiskFull", "delivered")
        await eventually(lambda: _statuses(server) == ["sent"], what="the first message marked sent", timeout=30)

        # The next answer is late: Telegram has posted the message, TeleOps does not know yet. Kill -9 now.
        fake_telegram.answer_delay_s["sendMessage"] = 3.0
        await _post_to(server, "HighLoad", "in-flight")
        await eventually(lambda: len(fake_telegram.chat_messages(BLOCKED)) == 2, what="the second message", timeout=30)
        server.process.kill()
        await asyncio.to_thread(server.process.wait, 10)
        assert _statuses(server) == ["sent", "sending"]  # accepted by the platform, not recorded: the window
        fake_telegram.answer_delay_s.clear()

        server = await asyncio.to_thread(start_teleops, workdir, config=config)
        await eventually(lambda: _statuses(server) == ["sent", "sent"], what="the in-flight row sent again", timeout=30)
        await _post_to(server, "NodeDown", "after-restart")
        await eventually(lambda: len(fake_telegram.chat_messages(BLOCKED)) >= 4, what="the next alert", timeout=30)
        await eventually(lambda: _statuses(server) == ["sent"] * 3, what="every row sent", timeout=30)
    finally:
        stop_process(server.process)
    names = [
        next(n for n in ("DiskFull", "HighLoad", "NodeDown") if n in m.text.split("\n")[0])  # the title line
        for m in fake_telegram.chat_messages(BLOCKED)
    ]
    # Only the message in flight at the kill is posted twice; the one recorded as sent is not posted again.
    assert names == ["DiskFull", "HighLoad", "HighLoad", "NodeDown"]


async def test_a_claim_sends_the_edit_coalesced_after_the_worker_read_it_and_a_later_edit_gets_its_own_row(
    db: Database,
) -> None:
    store = OutboxStore(db)
    now = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)

    def text(n: int) -> dict[str, object]:
        return {"message": Message(title=f"+{n} more new incidents").to_json()}

    summary = await store.run(
        lambda conn: enqueue_send(conn, platform="fake", chat_id="c", payload=text(10), now=now, purpose="storm")
    )
    assert await store.claim(summary, now) == text(10)
    await store.mark_sent(summary, "m1", now)
    first = await store.run(lambda conn: enqueue_edit(conn, ref_id=summary, payload=text(20), now=now))
    [head] = await store.heads("fake")  # the worker reads the waiting edit ...
    assert (head.id, head.payload) == (first, text(20))
    # ... a storm batch coalesces a newer count into it before the worker claims it ...
    coalesced = await store.run(lambda conn: enqueue_edit(conn, ref_id=summary, payload=text(30), now=now))
    assert coalesced == first
    # ... and the claim hands the worker that newer count, not the one it read.
    assert await store.claim(first, now) == text(30)
    # Once claimed, a newer count is a new edit row: it never rewrites one in flight.
    later = await store.run(lambda conn: enqueue_edit(conn, ref_id=summary, payload=text(40), now=now))
    assert later not in (None, first)
    rows = {row.id: (row.status, row.payload) for row in await store.rows("fake")}
    assert rows[first] == (OutboxStatus.SENDING, text(30))
    assert rows[later] == (OutboxStatus.PENDING, text(40))
