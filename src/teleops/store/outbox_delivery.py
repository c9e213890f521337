"""One outbox row on its way to its platform, and the hand-off of rows claimed by the transaction that queued them.

The delivery worker (chat/outbox.py) takes `Delivery`s from the store (`OutboxStore.next_deliveries`, or
`OutboxStore.handed_over` for rows handed over after their commit) and, for each: `claim` it, render it, `await
ready()`, make the platform call, and report the result with `sent`, `retry` or `failed`. What it does not see is
how the store keeps its guarantees (ADR 0006, 0007):

- durability: a delivery is read, claimed and rendered while the fsync of the commit that wrote its row may still
  run; `ready()` returns once that commit is on stable storage, so nothing is announced that a power loss could
  take back (the durable mark is taken right after the read, or at the hand-over, just after the commit);
- the claim: a row read by `next_deliveries` is claimed by `claim` (`sending`, its attempt counted); a row handed
  over was claimed by its own transaction (`take_heads`), so `claim` is free and its attempt is counted by the
  write that records its outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from teleops.store.database import Database

if TYPE_CHECKING:
    from teleops.store.outbox import OutboxRow, OutboxStore

__all__ = ["Delivery", "HandOff"]


class Delivery:
    """One outbox row the worker may send: `claim`, then `ready`, then exactly one of `sent`, `retry`, `failed`."""

    __slots__ = ("_db", "_handed_over", "_mark", "_store", "row")

    def __init__(self, store: OutboxStore, db: Database, row: OutboxRow, mark: int, *, handed_over: bool) -> None:
        self.row = row
        self._store = store
        self._db = db
        self._mark = mark
        self._handed_over = handed_over

    async def claim(self, now: datetime) -> bool:
        """Mark the row `sending` before its platform call; False when it is no longer live (sent, failed or
        superseded meanwhile: skip it). `row` then holds the payload as claimed, which may be newer than the read
        (a coalesced edit). A handed-over row was claimed by its own transaction: True at once."""
        if self._handed_over:
            return True
        claimed = await self._store.claim(self.row.id, now)
        if claimed is None:
            return False
        self.row = replace(self.row, payload=claimed)
        return True

    async def ready(self) -> None:
        """Return once the row's commit is on stable storage (at once when it already is). Raises
        StorageUnavailable when that fsync failed: the row may not survive a power loss, so do not send it yet."""
        await self._db.wait_durable(self._mark)

    async def sent(self, platform_message_id: str | None, now: datetime) -> None:
        """The platform accepted the message (returns once committed, without waiting for the fsync:
        `OutboxStore.mark_sent`)."""
        await self._store.mark_sent(self.row.id, platform_message_id, now, count_attempt=self._handed_over)

    async def retry(self, error: str, next_attempt_at: datetime, *, blocked_until: datetime | None = None) -> None:
        """Back to `pending`, to go again at `next_attempt_at` (`blocked_until`: the platform's 429 deadline)."""
        await self._store.mark_retry(
            self.row.id, error, next_attempt_at, count_attempt=self._handed_over, blocked_until=blocked_until
        )

    async def failed(self, error: str) -> None:
        """The platform refused the message for good."""
        await self._store.mark_failed(self.row.id, error, count_attempt=self._handed_over)


class HandOff:
    """Rows claimed by the transaction that queued them (`take_heads`), handed over after its commit to the worker
    of their platform, which drains them at once (`OutboxStore.listen`). A platform without a listening worker
    drops them: they stay `sending`, which is live, so the worker's next read finds them."""

    def __init__(self, store: OutboxStore, db: Database) -> None:
        self._store = store
        self._db = db
        self._listeners: dict[str, Callable[[], None]] = {}
        self._queued: dict[str, list[Delivery]] = {}

    def listen(self, platform: str, on_handed_over: Callable[[], None] | None) -> None:
        if on_handed_over is None:
            self._listeners.pop(platform, None)
            self._queued.pop(platform, None)
        else:
            self._listeners[platform] = on_handed_over

    def hand_over(self, rows: Sequence[OutboxRow]) -> None:
        if not rows:
            return
        mark = self._db.durable_mark()  # after the commit that wrote them: `ready` waits for its fsync
        platforms: dict[str, Callable[[], None]] = {}
        for row in rows:
            listener = self._listeners.get(row.platform)
            if listener is None:
                continue
            platforms[row.platform] = listener
            delivery = Delivery(self._store, self._db, row, mark, handed_over=True)
            self._queued.setdefault(row.platform, []).append(delivery)
        for listener in platforms.values():  # each drains its platform's queue at once (oldest row first)
            listener()

    def drain(self, platform: str) -> list[Delivery]:
        return self._queued.pop(platform, [])
