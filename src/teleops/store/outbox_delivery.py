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
  write that records its outcome;
- the lease (several replicas on PostgreSQL, store/work_leases.py): a claim is this replica's for the work lease
  by the database's clock, renewed while the row is in flight (`OutboxStore.renew`). `holds_lease` says, by this
  process's monotonic clock, whether the claim may have run out (a process frozen with SIGSTOP wakes up past it):
  then the platform call is not made, the row is another replica's. The outcome is written under the claim's epoch,
  so a result that comes after a takeover is refused (`sent` etc. return False).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from teleops.store.database import Database

if TYPE_CHECKING:
    from teleops.store.outbox import OutboxStore
    from teleops.store.outbox_queue import OutboxRow

__all__ = ["Delivery", "HandOff"]

# How long a claim holds a row without a renewal (PostgreSQL) is the work lease, `Database.work_lease`
# (`database.work_lease`, 10 s by default). The worker renews the leases of the rows it has in flight every third of
# it (chat/outbox.py), so a platform call may take longer; a replica that died or froze hands its rows over this
# long after its last renewal.
#
# A replica stops trusting its claim this share of the lease sooner than the lease's end (by the database's clock):
# covers the time between the claim's statement and this process's reading of its own clock (a commit, a
# hand-over). 2 s of the default 10 s.
LEASE_MARGIN_SHARE = 0.2


class Delivery:
    """One outbox row the worker may send: `claim`, then `ready`, then exactly one of `sent`, `retry`, `failed`."""

    __slots__ = ("_claimed", "_db", "_handed_over", "_held_until", "_mark", "_store", "epoch", "reported", "row")

    def __init__(self, store: OutboxStore, db: Database, row: OutboxRow, mark: int, *, handed_over: bool) -> None:
        self.row = row
        self._store = store
        self._db = db
        self._mark = mark
        self._handed_over = handed_over
        # The claim this delivery holds: a handed-over row's was taken at ingest (the hand-over comes just after its
        # commit, so the lease is counted from now, less the margin); a read row's is taken by `claim`.
        self.epoch = row.claim_epoch
        self.reported = False  # its outcome is being written (`sent`, `retry`, `failed`): the claim ends there
        self._claimed = handed_over
        self._held_until = self._lease_from(time.monotonic()) if handed_over else 0.0

    def _lease_from(self, started: float) -> float:
        return started + self._db.work_lease.total_seconds() * (1 - LEASE_MARGIN_SHARE)

    def holds_lease(self) -> bool:
        """Whether the claim surely still holds the row, by this process's monotonic clock (always on SQLite, where
        one process delivers). False after a stall (SIGSTOP, a blocked loop) past the lease: do not call the
        platform, another replica may have taken the row over."""
        return self._db.is_sqlite or time.monotonic() < self._held_until

    @property
    def in_flight(self) -> bool:
        """Claimed and not yet reported: the lease to renew."""
        return self._claimed and not self.reported

    def renewed(self, started: float) -> None:
        """The lease was renewed by a statement sent at monotonic time `started`."""
        self._held_until = max(self._held_until, self._lease_from(started))

    async def claim(self, now: datetime) -> bool:
        """Mark the row `sending` before its platform call; False when it is no longer live (sent, failed or
        superseded meanwhile: skip it). `row` then holds the payload as claimed, which may be newer than the read
        (a coalesced edit). A handed-over row was claimed by its own transaction: True at once."""
        if self._handed_over:
            return True
        started = time.monotonic()  # before the statement: the lease, by the database's clock, starts later
        claimed = await self._store.take(self.row.id, now)
        if claimed is None:
            return False
        self.row = replace(self.row, payload=claimed.payload, claim_epoch=claimed.epoch)
        self.epoch = claimed.epoch
        self._held_until = self._lease_from(started)
        self._claimed = True
        return True

    async def ready(self) -> None:
        """Return once the row's commit is on stable storage (at once when it already is). Raises
        StorageUnavailable when that fsync failed: the row may not survive a power loss, so do not send it yet."""
        await self._db.wait_durable(self._mark)

    async def sent(self, platform_message_id: str | None, now: datetime) -> bool:
        """The platform accepted the message (returns once committed, without waiting for the fsync:
        `OutboxStore.mark_sent`). False: the claim had been taken over (this replica stalled past its lease), the
        row is the new owner's and nothing was written."""
        self.reported = True
        return await self._store.mark_sent(
            self.row.id, platform_message_id, now, count_attempt=self._handed_over, epoch=self.epoch
        )

    async def retry(self, error: str, next_attempt_at: datetime, *, blocked_until: datetime | None = None) -> bool:
        """Back to `pending`, to go again at `next_attempt_at` (`blocked_until`: the platform's 429 deadline).
        False as for `sent`."""
        self.reported = True
        return await self._store.mark_retry(
            self.row.id,
            error,
            next_attempt_at,
            count_attempt=self._handed_over,
            blocked_until=blocked_until,
            epoch=self.epoch,
        )

    async def failed(self, error: str) -> bool:
        """The platform refused the message for good. False as for `sent`."""
        self.reported = True
        return await self._store.mark_failed(self.row.id, error, count_attempt=self._handed_over, epoch=self.epoch)


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
