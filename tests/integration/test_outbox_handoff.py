"""The announcement hand-off (B3): a new row is claimed in the transaction that queued it when it is its chat's
head, on SQLite and PostgreSQL; handed over after the commit (`OutboxStore.hand_over`), the worker delivers it
without reading or claiming it, once, and a row handed over while no worker listens is delivered by the next start."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from teleops.chat.base import Capabilities, EventHandler, RateLimits, Rendered
from teleops.chat.console.gateway import CONSOLE_CAPABILITIES
from teleops.chat.input_watch import InputWatch
from teleops.chat.outbox import OutboxWorker
from teleops.domain.message import Message
from teleops.store.database import Database
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_claims import take_heads
from teleops.store.outbox_queue import OutboxRow, OutboxStatus, enqueue_send

NOW = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)


def _queue(conn: Connection, chat: str, text: str) -> int:
    return enqueue_send(conn, platform="fake", chat_id=chat, payload={"message": Message(body=text).to_json()}, now=NOW)


async def test_only_the_head_of_each_chat_is_taken_in_the_transaction_that_queued_it(db: Database) -> None:
    store = OutboxStore(db)
    older = await store.run(_queue, "busy", "queued earlier, still pending")

    def batch(conn: Connection) -> tuple[list[int], list[OutboxRow]]:
        ids = [_queue(conn, "quiet", "first"), _queue(conn, "quiet", "second"), _queue(conn, "busy", "behind")]
        return ids, take_heads(conn, ids)

    (first, second, behind), taken = await db.write(batch)
    assert [row.id for row in taken] == [first]
    assert taken[0].status == OutboxStatus.SENDING
    assert taken[0].attempts == 0
    assert taken[0].payload["message"]["body"] == "first"
    states = {row.id: (row.status, row.attempts) for row in await store.rows("fake")}
    assert states == {
        older: ("pending", 0),
        first: ("sending", 0),
        second: ("pending", 0),  # behind "first": per-chat order
        behind: ("pending", 0),  # behind the older pending row of its chat
    }
    assert await db.write(lambda conn: take_heads(conn, [])) == []

    def reply(conn: Connection) -> list[OutboxRow]:
        row_id = enqueue_send(conn, platform="fake", chat_id="other", payload={"message": {}}, now=NOW, reply_to=first)
        return take_heads(conn, [row_id])

    assert await db.write(reply) == []  # a reply goes through `heads`, which reads how its reference went


class _RecordingGateway:
    """A platform that records what reaches it (the far end of this test, not our code)."""

    def __init__(self, interval_s: float) -> None:
        # The console's capabilities, as a remote platform with a per-chat interval.
        limits = RateLimits(per_chat_interval_s=interval_s, per_group_per_minute=None, edit_interval_s=1.0)
        self._capabilities = replace(CONSOLE_CAPABILITIES, platform="fake", rate_limits=limits)
        self.sent: list[tuple[str, str, float]] = []
        self._input = InputWatch("fake", clock=lambda: NOW, mode="local", watched=False, note="a test's far end")

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def input_watch(self) -> InputWatch:
        return self._input

    async def start(self, on_event: EventHandler) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, chat_id: str, message: Rendered, *, reply_to: str | None = None) -> str:
        self.sent.append((chat_id, message.text, asyncio.get_running_loop().time()))
        return str(len(self.sent))

    async def edit(self, chat_id: str, message_id: str, message: Rendered) -> None:
        raise AssertionError("this test queues no edits")

    async def send_file(
        self,
        chat_id: str,
        filename: str,
        content: bytes,
        *,
        caption: Rendered | None = None,
        reply_to: str | None = None,
    ) -> str:
        raise AssertionError("this test queues no files")

    async def answer_button(self, callback_id: str, text: str) -> None:
        raise AssertionError("this test presses no buttons")

    async def leave(self, chat_id: str) -> bool:
        return False

    async def probe(self) -> str | None:
        return None


async def _settled(store: OutboxStore, count: int) -> list[OutboxRow]:
    for _ in range(500):
        rows = await store.rows("fake")
        if sum(r.status == OutboxStatus.SENT for r in rows) == count:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"not all sent: {[(r.id, r.status) for r in await store.rows('fake')]}")


async def test_a_handed_over_row_is_sent_once_and_a_rate_limited_one_waits_its_turn(db: Database) -> None:
    store = OutboxStore(db)
    gateway = _RecordingGateway(interval_s=0.5)
    worker = OutboxWorker(store, gateway, clock=lambda: NOW)
    worker.start()
    try:

        def queue_and_take(conn: Connection, text: str) -> list[OutboxRow]:
            return take_heads(conn, [_queue(conn, "chat", text)])

        for text in ("one", "two"):  # the second is taken too (the first is sent by then) but must wait 0.5 s
            taken = await db.write(queue_and_take, text)
            assert len(taken) == 1
            store.hand_over(taken)
            assert store.handed_over("fake") == []  # the listening worker drained it at once
            await asyncio.sleep(0.1)
        rows = await _settled(store, 2)
        assert [(chat, text) for chat, text, _ in gateway.sent] == [("chat", "one"), ("chat", "two")]
        assert gateway.sent[1][2] - gateway.sent[0][2] >= 0.5  # the chat's interval, though handed over 0.1 s later
        assert [r.attempts for r in rows] == [1, 1]  # counted once each, whichever way it went
        await asyncio.sleep(0.6)  # nothing comes again (a stale read or a second claim would resend)
        assert len(gateway.sent) == 2
    finally:
        await worker.stop()


async def test_a_row_handed_over_while_no_worker_listens_is_sent_once_by_the_next_start(db: Database) -> None:
    store = OutboxStore(db)
    gateway = _RecordingGateway(interval_s=0.0)
    worker = OutboxWorker(store, gateway, clock=lambda: NOW)
    taken = await db.write(lambda conn: take_heads(conn, [_queue(conn, "chat", "while stopped")]))
    store.hand_over(taken)  # nobody listens: dropped from the hand-off, still `sending` in the table
    assert store.handed_over("fake") == []
    assert [(r.status, r.attempts) for r in await store.rows("fake")] == [("sending", 0)]
    worker.start()
    try:
        rows = await _settled(store, 1)
        assert [text for _, text, _ in gateway.sent] == ["while stopped"]
        assert [r.attempts for r in rows] == [1]  # claimed by the read (`Delivery.claim`), counted there
    finally:
        await worker.stop()
    store.hand_over(await db.write(lambda conn: take_heads(conn, [_queue(conn, "chat", "after stop")])))
    assert store.handed_over("fake") == []  # stop() stopped listening: nothing is held for a stopped worker
    assert len(gateway.sent) == 1
