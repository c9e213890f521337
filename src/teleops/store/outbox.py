"""The outbox store (`OutboxStore`): the delivery worker's reads, claims and outcome marks. What a row is and how it
is queued: store/outbox_queue.py; the claim and lease statements: store/outbox_claims.py; one row on its way:
store/outbox_delivery.py.

When a platform answers 429, the deadline it asked for (`retry_after`) is kept on the row (`blocked_until`): the
row stays its chat's head, so whoever reads the heads after a restart sees that the chat must wait until then.

Delivery is at least once. A message can reach a platform twice only when the platform accepted it and the process
died (kill -9, power loss) or the answer was lost (timeout) before `mark_sent` committed: the row is still `sending`
and is sent again. The commit of `mark_sent` closes that window for a process crash; the caller does not wait for
its fsync as well (only a power loss can undo a commit, and then the message is sent again, as in the window).
See docs/telegram.md ("What TeleOps guarantees").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.database import Database
from teleops.store.outbox_claims import CLAIM, CLAIM_SHARED, HEADS, HEADS_SHARED, RENEW, take_heads
from teleops.store.outbox_delivery import Delivery, HandOff
from teleops.store.outbox_queue import LIVE_STATUSES, ROW_COLUMNS, Claim, OutboxRow, OutboxStatus, enqueue_send, row_of
from teleops.store.schema import outbox

__all__ = ["OutboxStore", "chat_of_row", "waiting_by_platform"]

log = structlog.get_logger(__name__)


class OutboxStore:
    """Reads and state changes for the delivery worker, and enqueueing in a transaction of its own."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._hand_off = HandOff(self, db)
        # Claims this replica took, and outcomes refused because its claim had been taken over (for /metrics).
        self.claims_taken = 0
        self.claims_lost = 0

    @property
    def work_lease(self) -> timedelta:
        """How long a claim holds a row without a renewal (`database.work_lease`); renew well within it."""
        return self._db.work_lease

    @property
    def shared(self) -> bool:
        """Whether other replicas may deliver from this outbox too (PostgreSQL): claims hold leases that the
        worker renews, and the worker looks for rows other replicas queued or left behind."""
        return not self._db.is_sqlite

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run `fn(conn, *args)` in one transaction (to enqueue several rows atomically); returns once it is
        committed, without waiting for its fsync: a delivery waits for that before any platform call
        (`Delivery.ready`), so the message is prepared meanwhile and never announced before it is on disk."""
        return await self._db.write_unsynced(fn, *args)

    async def send(
        self,
        *,
        platform: str,
        chat_id: str,
        payload: dict[str, Any],
        now: datetime,
        incident_id: int | None = None,
        reply_to: int | None = None,
    ) -> tuple[int, bool]:
        """Queue one message in a transaction of its own; when its chat has nothing before it, claim it there and
        hand it to the worker at once (ADR 0007). Returns (the row id, whether it was handed over); when it was not,
        the caller wakes the workers. Like `run`, it returns at commit: the delivery waits for the fsync."""

        def apply(conn: Connection) -> tuple[int, list[OutboxRow]]:
            row_id = enqueue_send(
                conn,
                platform=platform,
                chat_id=chat_id,
                payload=payload,
                now=now,
                incident_id=incident_id,
                reply_to=reply_to,
            )
            return row_id, take_heads(conn, [row_id])

        row_id, taken = await self._db.write_unsynced(apply)
        if taken:
            self.hand_over(taken)
        return int(row_id), bool(taken)

    async def heads(self, platform: str, *, limit: int = 500) -> list[OutboxRow]:
        """For each chat of `platform` with work left, its oldest live row (per-chat order), oldest chat first."""
        if self.shared:
            params = {"platform": platform, "limit": limit, "replica": self._db.replica}
            rows = await self._db.read(_all_rows, HEADS_SHARED, params)
        else:
            rows = await self._db.read(_all_rows, HEADS, {"platform": platform, "limit": limit})
        return [row_of(r) for r in rows]

    async def next_deliveries(self, platform: str, *, limit: int = 500) -> list[Delivery]:
        """`heads` as deliveries: each is to be claimed (`Delivery.claim`) and may go once `Delivery.ready`
        returns, when the commit that wrote it is durable (ADR 0006). A chat whose head another replica is delivering
        (its lease runs) is left out: that replica's claim holds the chat."""
        rows = await self.heads(platform, limit=limit)
        mark = self._db.durable_mark()  # right after the read: covers every commit it saw
        return [Delivery(self, self._db, row, mark, handed_over=False) for row in rows if not row.claimed_elsewhere]

    def hand_over(self, rows: Sequence[OutboxRow]) -> None:
        """After the commit of the transaction that claimed `rows` (`take_heads`): queue them for the worker of
        their platform, which takes them at once (`handed_over`) without a read or a claim (ADR 0007). Call on the
        event loop."""
        self._hand_off.hand_over(rows)

    def handed_over(self, platform: str) -> list[Delivery]:
        """Drain the rows of `platform` handed over since the last call, oldest first (claimed already)."""
        return self._hand_off.drain(platform)

    def listen(self, platform: str, on_handed_over: Callable[[], None] | None) -> None:
        """`on_handed_over()` is called (on the loop) when rows of `platform` are handed over; None stops it, after
        which rows handed over are left to the next read (`next_deliveries`)."""
        self._hand_off.listen(platform, on_handed_over)

    async def get(self, row_id: int) -> OutboxRow | None:
        row = await self._db.first(select(*ROW_COLUMNS).where(outbox.c.id == row_id))
        return row_of(row) if row is not None else None

    async def rows(self, platform: str, chat_id: str | None = None) -> list[OutboxRow]:
        """Every row of `platform` (optionally one chat), oldest first — for status pages and tests."""
        query = select(*ROW_COLUMNS).where(outbox.c.platform == platform).order_by(outbox.c.id)
        if chat_id is not None:
            query = query.where(outbox.c.chat_id == chat_id)
        return [row_of(r) for r in await self._db.all(query)]

    async def chats(self, platform: str) -> set[str]:
        """Every chat of `platform` TeleOps ever queued a message for (to leave the ones no longer configured)."""
        rows = await self._db.all(select(outbox.c.chat_id).where(outbox.c.platform == platform).distinct())
        return {str(row[0]) for row in rows}

    async def find_message(self, platform: str, chat_id: str, platform_message_id: str) -> OutboxRow | None:
        """The row whose delivered message has this platform id (to map a chat reply to its incident)."""
        query = select(*ROW_COLUMNS).where(
            outbox.c.platform == platform,
            outbox.c.chat_id == chat_id,
            outbox.c.platform_message_id == platform_message_id,
        )
        row = await self._db.first(query.order_by(outbox.c.id).limit(1))
        return row_of(row) if row is not None else None

    async def claim(self, row_id: int, now: datetime) -> dict[str, Any] | None:
        """`take`, for callers that need only the payload (tests, tools)."""
        taken = await self.take(row_id, now)
        return taken.payload if taken is not None else None

    async def take(self, row_id: int, now: datetime) -> Claim | None:
        """Mark a row `sending` under this replica's claim before the platform call; returns its payload as claimed
        (what to send: a pending row's payload may have been rewritten since `heads` read it, e.g. a coalesced
        edit) and the claim's epoch, or None when it is no longer live or another replica holds it (its lease runs,
        or its row lock: SKIP LOCKED).

        Returns once committed, without waiting for the fsync: a claim lost to a crash leaves the row `pending`,
        which the next start sends again exactly like a row left `sending`, so its durability buys nothing, and
        the platform call does not wait for a disk flush."""

        statement = CLAIM_SHARED if self.shared else CLAIM
        params = {"row_id": row_id, "now": now, "replica": self._db.replica, "work_lease": self._db.work_lease}

        def apply(conn: Connection) -> Claim | None:
            claimed = conn.execute(statement, params).first()
            return Claim(dict(claimed.payload), int(claimed.claim_epoch)) if claimed is not None else None

        result: Claim | None = await self._db.submit_batch(apply).applied
        if result is not None:
            self.claims_taken += 1
        return result

    async def renew(self, claims: Sequence[tuple[int, int]]) -> set[int]:
        """Extend the leases of rows this replica has in flight, `(row id, claim epoch)` each (PostgreSQL; on SQLite
        there are no leases and every row is kept). Returns the ids still held under that epoch: a row missing
        was taken over after its lease expired (this replica stalled), and its outcome will be refused."""
        if not claims or not self.shared:
            return {row_id for row_id, _ in claims}
        wanted = dict(claims)
        params = {"row_ids": list(wanted), "replica": self._db.replica, "work_lease": self._db.work_lease}
        rows = await self._db.run_in_transaction(_all_rows, RENEW, params)
        return {int(r.id) for r in rows if wanted.get(int(r.id)) == int(r.claim_epoch)}

    async def mark_sent(
        self,
        row_id: int,
        platform_message_id: str | None,
        now: datetime,
        *,
        count_attempt: bool = False,
        epoch: int | None = None,
    ) -> bool:
        """The platform accepted the row. `count_attempt`: the row was taken without `claim` (`take_heads`).
        `epoch`: the claim it was sent under; the mark is written only while that claim still holds the row (False:
        another replica took it over after this one's lease expired; its outcome stands). None: unconditionally.

        Returns once committed, without waiting for the fsync: until this commit, a crash sends the message again
        (the at-least-once window, module docstring), and the commit is what closes that window for a process
        crash; the fsync only guards against a power loss, after which the message is sent again."""
        return await self._set(
            row_id,
            count_attempt,
            epoch,
            durable=False,
            status=OutboxStatus.SENT.value,
            sent_at=now,
            platform_message_id=platform_message_id,
        )

    async def mark_retry(
        self,
        row_id: int,
        error: str,
        next_attempt_at: datetime,
        *,
        count_attempt: bool = False,
        blocked_until: datetime | None = None,
        epoch: int | None = None,
    ) -> bool:
        """Back to `pending`. `blocked_until`: the platform's retry_after deadline (429), kept on the row so that
        the chat waits for it even across a restart (`OutboxRow.blocked_until`). `epoch`: as for `mark_sent`."""
        values: dict[str, Any] = {
            "status": OutboxStatus.PENDING.value,
            "last_error": error[:500],
            "next_attempt_at": next_attempt_at,
        }
        if blocked_until is not None:
            values["blocked_until"] = blocked_until
        return await self._set(row_id, count_attempt, epoch, **values)

    async def mark_failed(
        self, row_id: int, error: str, *, count_attempt: bool = False, epoch: int | None = None
    ) -> bool:
        """The platform refused the row for good. `epoch`: as for `mark_sent`."""
        return await self._set(row_id, count_attempt, epoch, status=OutboxStatus.FAILED.value, last_error=error[:500])

    async def _set(
        self, row_id: int, count_attempt: bool, epoch: int | None, *, durable: bool = True, **values: Any
    ) -> bool:
        if count_attempt:
            values["attempts"] = outbox.c.attempts + 1
        statement = update(outbox).where(outbox.c.id == row_id)
        if epoch is not None:  # fenced: only under the claim that was taken
            statement = statement.where(outbox.c.claim_epoch == epoch, outbox.c.claimed_by == self._db.replica)
        statement = statement.values(**values)

        def apply(conn: Connection) -> int:
            return int(conn.execute(statement).rowcount)

        changed = await (self._db.write(apply) if durable else self._db.write_unsynced(apply))
        if changed == 0 and epoch is not None:
            self.claims_lost += 1
            log.warning(
                "outbox.claim_lost",
                outbox_id=row_id,
                epoch=epoch,
                replica=self._db.replica,
                hint="another replica took this row over after this one's lease expired; its outcome stands",
            )
            return False
        return True


def _all_rows(conn: Connection, query: Any, params: dict[str, Any]) -> list[Row[Any]]:
    return list(conn.execute(query, params))


def chat_of_row(conn: Connection, row_id: int) -> str:
    """The chat id of outbox row `row_id` (raises LookupError when it does not exist)."""
    value = conn.execute(select(outbox.c.chat_id).where(outbox.c.id == row_id)).scalar()
    if value is None:
        raise LookupError(f"outbox row {row_id} does not exist")
    return str(value)


def waiting_by_platform(conn: Connection) -> dict[str, tuple[int, datetime | None]]:
    """Per platform: rows not yet delivered or failed, and the oldest one's creation time (for the metrics)."""
    rows = conn.execute(
        select(outbox.c.platform, func.count(), func.min(outbox.c.created_at))
        .where(outbox.c.status.in_(LIVE_STATUSES))
        .group_by(outbox.c.platform)
    ).all()
    return {row[0]: (int(row[1]), row[2]) for row in rows}
