"""The outbox: every outgoing chat message, edit and file is a row before any platform sees it.

Rows move `pending -> sending -> sent`, or back to `pending` on a temporary failure, or to `failed`
when the platform refuses for good; a pending edit replaced by a newer one becomes `superseded`.
The `enqueue_*` functions take a Connection so callers write them in their own transaction (the
ingest writes notifications in the same transaction as the incident, invariant 1).

When a platform answers 429, the deadline it asked for (`retry_after`) is kept on the row (`blocked_until`): the
row stays its chat's head, so whoever reads the heads after a restart sees that the chat must wait until then.

Delivery is at least once. A message can reach a platform twice only when the platform accepted it and the process
died (kill -9, power loss) or the answer was lost (timeout) before `mark_sent` committed: the row is still `sending`
and is sent again. The commit of `mark_sent` closes that window for a process crash; the caller does not wait for
its fsync as well (only a power loss can undo a commit, and then the message is sent again, as in the window).
See docs/telegram.md ("What TeleOps guarantees").

Several replicas on one PostgreSQL (issue #23): a claim writes the replica's name, a lease end by the database's
clock (the work lease, renewed while the platform call runs) and a new claim epoch (store/work_leases.py). A row
`sending` under another replica's live lease is left alone (it is still its chat's head, so the chat waits); once
the lease expired (the replica died or froze) any replica claims it again. The outcome is written only under the
claim that was taken (`epoch`): a replica that stalled past its lease finds its result refused, and the row is the
new owner's. Claims use `FOR UPDATE SKIP LOCKED`, so a row locked by another transaction never holds a worker up.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row

from teleops.store.database import Database
from teleops.store.outbox_delivery import Delivery, HandOff
from teleops.store.schema import outbox
from teleops.store.work_leases import db_now, lease_end, replica_of, work_lease_of

__all__ = [
    "Claim",
    "Delivery",
    "OutboxKind",
    "OutboxRow",
    "OutboxStatus",
    "OutboxStore",
    "chat_of_row",
    "enqueue_edit",
    "enqueue_file",
    "enqueue_send",
    "take_heads",
]


class OutboxKind(enum.StrEnum):
    SEND = "send"  # a new message (a reply when ref_id is set)
    EDIT = "edit"  # replace the text of the message sent by row ref_id
    FILE = "file"  # a document (a reply when ref_id is set)


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


_LIVE = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """A row claimed for delivery: what to send, and the claim's epoch, which the outcome's write names."""

    payload: dict[str, Any]
    epoch: int


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    platform: str
    chat_id: str
    kind: str
    incident_id: int | None
    payload: dict[str, Any]
    status: str
    attempts: int
    ref_id: int | None
    purpose: str | None
    platform_message_id: str | None
    created_at: datetime
    # For EDIT and replies: the referenced row's delivery state (None when there is no reference).
    ref_status: str | None = None
    ref_message_id: str | None = None
    # The platform's retry_after deadline (429): nothing goes to this chat before it (this row is its head).
    blocked_until: datetime | None = None
    # The claim epoch the row had when read (a row taken by `take_heads`: its claim's epoch).
    claim_epoch: int = 0
    # Read by `heads` on PostgreSQL: the row is `sending` under another replica's lease that has not expired.
    claimed_elsewhere: bool = False


def enqueue_send(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    payload: dict[str, Any],
    now: datetime,
    incident_id: int | None = None,
    reply_to: int | None = None,
    purpose: str | None = None,
) -> int:
    """Queue a new message (`reply_to`: an outbox row id whose message this answers). Returns the row id."""
    return _insert_row(
        conn,
        platform=platform,
        chat_id=chat_id,
        kind=OutboxKind.SEND,
        payload=payload,
        now=now,
        incident_id=incident_id,
        ref_id=reply_to,
        purpose=purpose,
    )


def _insert_row(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    kind: OutboxKind,
    payload: dict[str, Any],
    now: datetime,
    incident_id: int | None,
    ref_id: int | None,
    purpose: str | None = None,
) -> int:
    values = {
        "platform": platform,
        "chat_id": chat_id,
        "kind": kind.value,
        "incident_id": incident_id,
        "payload": payload,
        "status": OutboxStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "ref_id": ref_id,
        "purpose": purpose,
    }
    return int(conn.execute(_INSERT, values).scalar_one())


def enqueue_file(
    conn: Connection,
    *,
    platform: str,
    chat_id: str,
    filename: str,
    content: str,
    caption: dict[str, Any] | None,
    now: datetime,
    incident_id: int | None = None,
    reply_to: int | None = None,
) -> int:
    """Queue a document upload (UTF-8 text content, e.g. long command output). Returns the row id."""
    payload = {"file": {"name": filename, "text": content}, "message": caption}
    return _insert_row(
        conn,
        platform=platform,
        chat_id=chat_id,
        kind=OutboxKind.FILE,
        payload=payload,
        now=now,
        incident_id=incident_id,
        ref_id=reply_to,
    )


def enqueue_edit(conn: Connection, *, ref_id: int, payload: dict[str, Any], now: datetime) -> int | None:
    """Queue an edit of the message sent by row `ref_id`; a still-pending edit of it is replaced (coalesced).

    Returns the edit row id, or None when `ref_id` does not exist.
    """
    ref = conn.execute(
        select(outbox.c.platform, outbox.c.chat_id, outbox.c.incident_id).where(outbox.c.id == ref_id)
    ).first()
    if ref is None:
        return None
    pending = conn.execute(
        select(outbox.c.id)
        .where(
            outbox.c.ref_id == ref_id,
            outbox.c.kind == OutboxKind.EDIT.value,
            outbox.c.status == OutboxStatus.PENDING.value,
        )
        .order_by(outbox.c.id.desc())
        .limit(1)
    ).scalar()
    if pending is not None:
        # Only while it is still pending: a delivery that claimed it meanwhile sends what it claimed, so the newer
        # text needs an edit row of its own.
        coalesced = conn.execute(
            update(outbox)
            .where(outbox.c.id == pending, outbox.c.status == OutboxStatus.PENDING.value)
            .values(payload=payload)
        )
        if coalesced.rowcount == 1:
            return int(pending)
    return _insert_row(
        conn,
        platform=ref.platform,
        chat_id=ref.chat_id,
        kind=OutboxKind.EDIT,
        payload=payload,
        now=now,
        incident_id=ref.incident_id,
        ref_id=ref_id,
    )


def _row(row: Row[Any, *tuple[Any, ...]]) -> OutboxRow:
    m = row._mapping
    return OutboxRow(
        id=m["id"],
        platform=m["platform"],
        chat_id=m["chat_id"],
        kind=m["kind"],
        incident_id=m["incident_id"],
        payload=m["payload"],
        status=m["status"],
        attempts=m["attempts"],
        ref_id=m["ref_id"],
        purpose=m["purpose"],
        platform_message_id=m["platform_message_id"],
        created_at=m["created_at"],
        ref_status=m.get("ref_status"),
        ref_message_id=m.get("ref_message_id"),
        blocked_until=m["blocked_until"],
        claim_epoch=m["claim_epoch"],
        claimed_elsewhere=bool(m.get("claimed_elsewhere")),
    )


_ROW_COLUMNS = (
    outbox.c.id,
    outbox.c.platform,
    outbox.c.chat_id,
    outbox.c.kind,
    outbox.c.incident_id,
    outbox.c.payload,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.ref_id,
    outbox.c.purpose,
    outbox.c.platform_message_id,
    outbox.c.created_at,
    outbox.c.blocked_until,
    outbox.c.claim_epoch,
)

# Built once: the delivery worker runs these for every message, and building a statement with its joins and
# subquery cost more than executing it (about 1 ms per call; B3 profile in docs/benchmarks.md).
_REF = outbox.alias("ref")
_HEAD_IDS = (
    select(func.min(outbox.c.id).label("id"))
    .where(outbox.c.platform == bindparam("platform"), outbox.c.status.in_(_LIVE))
    .group_by(outbox.c.chat_id)
    .subquery()
)
_HEAD_COLUMNS = (*_ROW_COLUMNS, _REF.c.status.label("ref_status"), _REF.c.platform_message_id.label("ref_message_id"))
_HEADS = (
    select(*_HEAD_COLUMNS)
    .join(_HEAD_IDS, _HEAD_IDS.c.id == outbox.c.id)
    .outerjoin(_REF, and_(_REF.c.id == outbox.c.ref_id))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
# PostgreSQL: a head another replica delivers now (its lease runs) is marked, so the worker leaves its chat alone.
_CLAIMED_ELSEWHERE = and_(
    outbox.c.status == OutboxStatus.SENDING.value,
    outbox.c.claimed_by != bindparam("replica"),
    outbox.c.lease_until > db_now(),
)
_HEADS_SHARED = (
    select(*_HEAD_COLUMNS, _CLAIMED_ELSEWHERE.label("claimed_elsewhere"))
    .join(_HEAD_IDS, _HEAD_IDS.c.id == outbox.c.id)
    .outerjoin(_REF, and_(_REF.c.id == outbox.c.ref_id))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_INSERT = insert(outbox).returning(outbox.c.id)
_CLAIMED = {
    "status": OutboxStatus.SENDING.value,
    "attempts": outbox.c.attempts + 1,
    "next_attempt_at": bindparam("now"),
    "claimed_by": bindparam("replica"),
    "claim_epoch": outbox.c.claim_epoch + 1,
}
_CLAIM = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"), outbox.c.status.in_(_LIVE))
    .values(**_CLAIMED)
    .returning(outbox.c.payload, outbox.c.claim_epoch)
)
# A row is free to claim on PostgreSQL when it is pending, or `sending` under no live lease of another replica: its
# own (a row taken at ingest that the rate limits held back), none (claimed before leases existed), or expired.
_FREE = or_(
    outbox.c.status == OutboxStatus.PENDING.value,
    and_(
        outbox.c.status == OutboxStatus.SENDING.value,
        or_(
            outbox.c.claimed_by.is_(None),
            outbox.c.claimed_by == bindparam("replica"),
            outbox.c.lease_until.is_(None),
            outbox.c.lease_until <= db_now(),
        ),
    ),
)
_CLAIM_SHARED = (
    update(outbox)
    .where(
        outbox.c.id.in_(
            select(outbox.c.id)
            .where(outbox.c.id == bindparam("row_id"), _FREE)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(**_CLAIMED, lease_until=lease_end())
    .returning(outbox.c.payload, outbox.c.claim_epoch)
)
# The renewal of the leases of rows a replica has in flight (PostgreSQL).
_RENEW = (
    update(outbox)
    .where(
        outbox.c.id.in_(bindparam("row_ids", expanding=True)),
        outbox.c.status == OutboxStatus.SENDING.value,
        outbox.c.claimed_by == bindparam("replica"),
    )
    .values(lease_until=lease_end())
    .returning(outbox.c.id, outbox.c.claim_epoch)
)


# The delivery claim of new rows, taken in the transaction that wrote them, of those no older row of whose chat
# is live (one statement for all the rows of an ingest batch).
_OLDER_LIVE = outbox.alias("older")
_TAKE_HEADS_WHERE = (
    outbox.c.id.in_(bindparam("row_ids", expanding=True)),
    outbox.c.status == OutboxStatus.PENDING.value,
    outbox.c.ref_id.is_(None),  # a reply needs its reference's delivery state: `heads` reads it
    ~select(_OLDER_LIVE.c.id)
    .where(
        _OLDER_LIVE.c.platform == outbox.c.platform,
        _OLDER_LIVE.c.status.in_(_LIVE),
        _OLDER_LIVE.c.chat_id == outbox.c.chat_id,
        _OLDER_LIVE.c.id < outbox.c.id,
    )
    .exists(),
)
_TAKEN = {
    "status": OutboxStatus.SENDING.value,
    "claimed_by": bindparam("replica"),
    "claim_epoch": outbox.c.claim_epoch + 1,
}
_TAKE_HEADS = update(outbox).where(*_TAKE_HEADS_WHERE).values(**_TAKEN).returning(*_ROW_COLUMNS)
# PostgreSQL: with a lease (the rows are new and written by this transaction: nobody else can hold them).
_TAKE_HEADS_SHARED = (
    update(outbox).where(*_TAKE_HEADS_WHERE).values(**_TAKEN, lease_until=lease_end()).returning(*_ROW_COLUMNS)
)


def take_heads(conn: Connection, row_ids: Sequence[int]) -> list[OutboxRow]:
    """Claim for delivery, in the caller's transaction (the one that queued them), those of `row_ids` that are
    the oldest live row of their chat and answer no other message; returns them as claimed (`sending`). The
    others (behind an older row of their chat, or replies, whose reference's state `heads` joins) are found by
    the worker in order with `heads`. The attempt is counted by the write that records the outcome (`mark_sent`
    and the others with `count_attempt=True`).

    The caller hands the returned rows over after the commit (`OutboxStore.hand_over`): their worker then needs
    neither a read nor a claim of its own before the platform call. A taken row the worker does not deliver at once
    (rate limits) stays `sending`: it is live, so `heads` finds it like any other. On PostgreSQL the claim holds a
    lease (`database.work_lease`) under this replica's name, as a worker's claim does.
    """
    if not row_ids:
        return []
    statement = _TAKE_HEADS if conn.dialect.name == "sqlite" else _TAKE_HEADS_SHARED
    params = {"row_ids": list(row_ids), "replica": replica_of(conn), "work_lease": work_lease_of(conn)}
    rows = conn.execute(statement, params).all()
    return sorted((_row(r) for r in rows), key=lambda r: r.id)


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
            rows = await self._db.read(_all_rows, _HEADS_SHARED, params)
        else:
            rows = await self._db.read(_all_rows, _HEADS, {"platform": platform, "limit": limit})
        return [_row(r) for r in rows]

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
        row = await self._db.first(select(*_ROW_COLUMNS).where(outbox.c.id == row_id))
        return _row(row) if row is not None else None

    async def rows(self, platform: str, chat_id: str | None = None) -> list[OutboxRow]:
        """Every row of `platform` (optionally one chat), oldest first — for status pages and tests."""
        query = select(*_ROW_COLUMNS).where(outbox.c.platform == platform).order_by(outbox.c.id)
        if chat_id is not None:
            query = query.where(outbox.c.chat_id == chat_id)
        return [_row(r) for r in await self._db.all(query)]

    async def chats(self, platform: str) -> set[str]:
        """Every chat of `platform` TeleOps ever queued a message for (to leave the ones no longer configured)."""
        rows = await self._db.all(select(outbox.c.chat_id).where(outbox.c.platform == platform).distinct())
        return {str(row[0]) for row in rows}

    async def find_message(self, platform: str, chat_id: str, platform_message_id: str) -> OutboxRow | None:
        """The row whose delivered message has this platform id (to map a chat reply to its incident)."""
        query = select(*_ROW_COLUMNS).where(
            outbox.c.platform == platform,
            outbox.c.chat_id == chat_id,
            outbox.c.platform_message_id == platform_message_id,
        )
        row = await self._db.first(query.order_by(outbox.c.id).limit(1))
        return _row(row) if row is not None else None

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

        statement = _CLAIM_SHARED if self.shared else _CLAIM
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
        rows = await self._db.run_in_transaction(_all_rows, _RENEW, params)
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
        .where(outbox.c.status.in_(_LIVE))
        .group_by(outbox.c.platform)
    ).all()
    return {row[0]: (int(row[1]), row[2]) for row in rows}
