"""The audit log: append-only, hash-chained, written in the same transaction as the action it records.

Each event carries `seq` (1, 2, 3, … with no gaps), `prev_hash` (the previous event's hash, or 64 zeros for
the first) and `hash` = SHA-256 over the canonical JSON of (seq, prev_hash, at, actor, action, subject, data).
The newest (seq, hash) also lives in the one-row table `audit_head`; appending starts by updating that row,
which serialises appenders: PostgreSQL row lock (across replicas), SQLite's single writer lock.

A chain that is consistent proves little on its own (a database attacker can recompute it); the head is
therefore also written to a file outside the database (see `teleops.store.audit_checkpoints`), and
`verify_chain` compares the two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, String, Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import UTCDateTime, metadata

__all__ = [
    "GENESIS_HASH",
    "AuditEvent",
    "AuditUnavailable",
    "append",
    "append_many",
    "audit_events",
    "audit_head",
    "event_hash",
    "iter_events",
    "read_head",
    "record",
]

GENESIS_HASH = "0" * 64

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row (id = 1): the newest seq and hash. Updating it first is the append lock.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


class AuditUnavailable(Exception):
    """The audit record could not be written; the action it was meant to record must not happen."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    data: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """The event as exported (JSON lines) and as hashed (minus `hash`)."""
        return {
            "seq": self.seq,
            "at": _at_text(self.at),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def _at_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *, seq: int, prev_hash: str, at: datetime, actor: str, action: str, subject: str, data: Mapping[str, Any]
) -> str:
    """SHA-256 (hex) of the canonical JSON (sorted keys, no spaces, UTF-8) of the event's fields."""
    canonical = json.dumps(
        {
            "seq": seq,
            "prev_hash": prev_hash,
            "at": _at_text(at),
            "actor": actor,
            "action": action,
            "subject": subject,
            "data": data,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(
    conn: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str = "",
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event inside the caller's transaction (call it from a `Database.run_in_transaction` function).

    `actor` is the human principal (never a bot account); put the channel it came through in `data`.
    `data` must be JSON (no NaN); it is stored and hashed as given. The event exists only if the caller's
    transaction commits. Raises AuditUnavailable when the chain head is missing (migrations not run) or
    the data is not JSON; database errors propagate and roll the caller's transaction back.
    """
    return append_many(conn, at=at, entries=[(actor, action, subject, dict(data or {}))])[0]


def append_many(
    conn: Connection, *, at: datetime, entries: Sequence[tuple[str, str, str, Mapping[str, Any]]]
) -> list[AuditEvent]:
    """`append` for several events (actor, action, subject, data) in one go: the head is moved once and the
    events are inserted with one statement; the chain is exactly what as many `append` calls would give."""
    if not entries:
        return []
    # Microseconds are what both databases keep; hashing the stored value keeps verification exact.
    stamp = at.astimezone(UTC)
    # UPDATE first: it takes the write lock (SQLite) or the row lock (PostgreSQL) before we read the head,
    # so two appenders can never both extend the same head. RETURNING gives the new seq and the old hash.
    row = conn.execute(_MOVE_HEAD, {"count": len(entries)}).first()
    if row is None:
        raise AuditUnavailable("the audit chain head is missing; run `teleops db upgrade`")
    seq, prev_hash = int(row.seq) - len(entries), str(row.hash)
    events = []
    for actor, action, subject, data in entries:
        seq += 1
        payload = dict(data)
        try:
            digest = event_hash(
                seq=seq, prev_hash=prev_hash, at=stamp, actor=actor, action=action, subject=subject, data=payload
            )
        except (TypeError, ValueError) as exc:
            raise AuditUnavailable(f"audit data for {action!r} is not JSON: {exc}") from exc
        events.append(AuditEvent(seq, stamp, actor, action, subject, payload, prev_hash, digest))
        prev_hash = digest
    conn.execute(
        _INSERT_EVENTS,
        [
            {"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject, "data": e.data,
             "prev_hash": e.prev_hash, "hash": e.hash}
            for e in events
        ],
    )  # fmt: skip
    conn.execute(_SET_HEAD_HASH, {"new_hash": prev_hash})
    return events


# Built once: every dispatch appends, and building these cost more than running them (B8 profile).
_MOVE_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=audit_head.c.seq + bindparam("count"))
    .returning(audit_head.c.seq, audit_head.c.hash)
)
_INSERT_EVENTS = insert(audit_events)
_SET_HEAD_HASH = update(audit_head).where(audit_head.c.id == 1).values(hash=bindparam("new_hash"))


async def record(
    db: Database,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str = "",
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in a transaction of its own (for events that are the whole action, e.g. a refusal).

    Raises StorageUnavailable or AuditUnavailable when it could not be written.
    """

    def apply(conn: Connection) -> AuditEvent:
        return append(conn, at=at, actor=actor, action=action, subject=subject, data=data)

    return await db.run_in_transaction(apply)


def read_head(conn: Connection) -> tuple[int, str]:
    """The committed (seq, hash) of the newest event; (0, GENESIS_HASH) for an empty log."""
    row = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
    if row is None:
        raise AuditUnavailable("the audit chain head is missing; run `teleops db upgrade`")
    return int(row.seq), str(row.hash)


def iter_events(conn: Connection, *, since: int = 0, batch: int = 1000) -> Iterator[AuditEvent]:
    """Events with seq >= since, oldest first, read in batches (the log may be large)."""
    after = since - 1
    while True:
        rows = conn.execute(
            select(audit_events).where(audit_events.c.seq > after).order_by(audit_events.c.seq).limit(batch)
        ).all()
        for row in rows:
            yield AuditEvent(
                int(row.seq), row.at, row.actor, row.action, row.subject, row.data, row.prev_hash, row.hash
            )
        if len(rows) < batch:
            return
        after = int(rows[-1].seq)
