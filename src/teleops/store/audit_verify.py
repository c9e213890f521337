"""`teleops audit verify`: walk the chain, then hold it against the checkpoints kept outside the database.

Finds, and names the first bad record for: an edited record (its hash no longer matches its content), a
deleted record (a gap in seq), reordered records (a record hashed under another seq, or linked to the
wrong predecessor), a truncated log (the newest record is older than a checkpoint, or than the head row)
and a fully re-chained log (hashes consistent, but a record's hash differs from the checkpoint for its seq).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from teleops.store.audit import GENESIS_HASH, AuditEvent, event_hash, iter_events, read_head
from teleops.store.audit_checkpoints import Checkpoint, CheckpointError, CheckpointLog
from teleops.store.database import Database

__all__ = ["Finding", "Tamper", "verify_audit"]


class Tamper(enum.StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    RECHAINED = "re-chained"
    CHECKPOINT = "checkpoint file"


@dataclass(frozen=True, slots=True)
class Finding:
    """The verdict. `ok` with `events` counted, or the first problem with its kind, seq and an explanation."""

    ok: bool
    events: int
    head_seq: int
    checkpoints: int
    kind: Tamper | None = None
    seq: int | None = None
    message: str = ""


def _recomputed(event: AuditEvent, *, seq: int | None = None, prev_hash: str | None = None) -> str:
    return event_hash(
        seq=event.seq if seq is None else seq,
        prev_hash=event.prev_hash if prev_hash is None else prev_hash,
        at=event.at,
        actor=event.actor,
        action=event.action,
        subject=event.subject,
        data=event.data,
    )


def _walk(conn: Connection, checkpoints: list[Checkpoint]) -> Finding:
    head_seq, head_hash = read_head(conn)
    by_seq = {c.seq: c for c in checkpoints}
    expected_seq, prev_hash = 1, GENESIS_HASH
    count = 0
    bad = _Bad(head_seq, len(checkpoints))
    for event in iter_events(conn):
        count += 1
        if event.seq > expected_seq:
            missing = f"{expected_seq}" if event.seq == expected_seq + 1 else f"{expected_seq}–{event.seq - 1}"
            return bad(Tamper.DELETED, expected_seq, f"record(s) {missing} are missing: the chain jumps to {event.seq}")
        if _recomputed(event) != event.hash:
            # Hashed under another seq? Then the record was moved, not edited.
            for other in range(max(1, event.seq - 50), event.seq + 51):
                if other != event.seq and _recomputed(event, seq=other) == event.hash:
                    return bad(
                        Tamper.REORDERED,
                        event.seq,
                        f"record {event.seq} ({event.action}) was written as record {other}: records were reordered",
                    )
            return bad(
                Tamper.EDITED,
                event.seq,
                f"record {event.seq} ({event.action} by {event.actor}) does not match its hash: it was edited",
            )
        if event.prev_hash != prev_hash:
            return bad(
                Tamper.REORDERED,
                event.seq,
                f"record {event.seq} ({event.action}) does not follow record {event.seq - 1}: its prev_hash links "
                "to another record (reordered or spliced)",
            )
        checkpoint = by_seq.get(event.seq)
        if checkpoint is not None and checkpoint.hash != event.hash:
            return bad(
                Tamper.RECHAINED,
                event.seq,
                f"record {event.seq} has hash {event.hash[:12]}… but checkpoint line {checkpoint.line} says "
                f"{checkpoint.hash[:12]}…: the chain was rebuilt after that checkpoint was written",
            )
        expected_seq, prev_hash = event.seq + 1, event.hash
    newest = expected_seq - 1
    latest = max((c.seq for c in checkpoints), default=0)
    if latest > newest:
        return bad(
            Tamper.TRUNCATED,
            newest + 1,
            f"the newest record is {newest} but checkpoint {latest} was written: records {newest + 1}–{latest} "
            "were removed",
        )
    if head_seq > newest:
        return bad(
            Tamper.TRUNCATED,
            newest + 1,
            f"the newest record is {newest} but the chain head says {head_seq}: the tail was removed",
        )
    if head_seq != newest or (newest and head_hash != prev_hash):
        return bad(
            Tamper.EDITED,
            head_seq,
            f"the chain head row (seq {head_seq}) does not match the newest record ({newest}); it was edited",
        )
    return Finding(True, count, head_seq, len(checkpoints))


@dataclass(frozen=True, slots=True)
class _Bad:
    head_seq: int
    checkpoints: int

    def __call__(self, kind: Tamper, seq: int, message: str) -> Finding:
        return Finding(False, 0, self.head_seq, self.checkpoints, kind, seq, message)


async def verify_audit(db: Database, log: CheckpointLog) -> Finding:
    """Check the whole chain and the checkpoint file. Never raises for tampering (it is the answer);
    raises StorageUnavailable when the database cannot be read."""
    try:
        checkpoints = log.read()
    except CheckpointError as exc:
        return Finding(False, 0, 0, 0, Tamper.CHECKPOINT, None, str(exc))
    return await db.run_in_transaction(_walk, checkpoints)
