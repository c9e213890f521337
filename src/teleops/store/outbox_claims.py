"""The outbox's claims and leases: which rows are their chat's head, and the statements that claim them, renew
their leases and take new rows at ingest (`take_heads`).

Several replicas on one PostgreSQL (issue #23): a claim writes the replica's name, a lease end by the database's
clock (the work lease, renewed while the platform call runs) and a new claim epoch (store/work_leases.py). A row
`sending` under another replica's live lease is left alone (it is still its chat's head, so the chat waits); once
the lease expired (the replica died or froze) any replica claims it again. The outcome is written only under the
claim that was taken (`epoch`): a replica that stalled past its lease finds its result refused, and the row is the
new owner's. Claims use `FOR UPDATE SKIP LOCKED`, so a row locked by another transaction never holds a worker up.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

from teleops.store.outbox_queue import LIVE_STATUSES, ROW_COLUMNS, OutboxRow, OutboxStatus, row_of
from teleops.store.schema import outbox
from teleops.store.work_leases import db_now, lease_end, replica_of, work_lease_of

__all__ = ["CLAIM", "CLAIM_SHARED", "HEADS", "HEADS_SHARED", "RENEW", "take_heads"]

# Built once: the delivery worker runs these for every message, and building a statement with its joins and
# subquery cost more than executing it (about 1 ms per call; B3 profile in docs/benchmarks.md).
_REF = outbox.alias("ref")
_HEAD_IDS = (
    select(func.min(outbox.c.id).label("id"))
    .where(outbox.c.platform == bindparam("platform"), outbox.c.status.in_(LIVE_STATUSES))
    .group_by(outbox.c.chat_id)
    .subquery()
)
_HEAD_COLUMNS = (*ROW_COLUMNS, _REF.c.status.label("ref_status"), _REF.c.platform_message_id.label("ref_message_id"))
HEADS = (
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
HEADS_SHARED = (
    select(*_HEAD_COLUMNS, _CLAIMED_ELSEWHERE.label("claimed_elsewhere"))
    .join(_HEAD_IDS, _HEAD_IDS.c.id == outbox.c.id)
    .outerjoin(_REF, and_(_REF.c.id == outbox.c.ref_id))
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_CLAIMED = {
    "status": OutboxStatus.SENDING.value,
    "attempts": outbox.c.attempts + 1,
    "next_attempt_at": bindparam("now"),
    "claimed_by": bindparam("replica"),
    "claim_epoch": outbox.c.claim_epoch + 1,
}
CLAIM = (
    update(outbox)
    .where(outbox.c.id == bindparam("row_id"), outbox.c.status.in_(LIVE_STATUSES))
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
CLAIM_SHARED = (
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
RENEW = (
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
        _OLDER_LIVE.c.status.in_(LIVE_STATUSES),
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
_TAKE_HEADS = update(outbox).where(*_TAKE_HEADS_WHERE).values(**_TAKEN).returning(*ROW_COLUMNS)
# PostgreSQL: with a lease (the rows are new and written by this transaction: nobody else can hold them).
_TAKE_HEADS_SHARED = (
    update(outbox).where(*_TAKE_HEADS_WHERE).values(**_TAKEN, lease_until=lease_end()).returning(*ROW_COLUMNS)
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
    return sorted((row_of(r) for r in rows), key=lambda r: r.id)
