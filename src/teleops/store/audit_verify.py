"""`teleops audit verify`: walk the chain, then hold it against the checkpoints kept outside the database.

Finds, and names the first bad record for: an edited record (its hash no longer matches its content), a
deleted record (a gap in seq), reordered records (a record hashed under another seq, or linked to the
wrong predecessor), a truncated log (the newest record is older than a checkpoint, or than the head row)
and a fully re-chained log (hashes consistent, but a record's hash differs from the checkpoint for its seq).

Anchors: the checkpoint file in the data directory (a missing one fails when the chain has records), and, when
``audit.witness`` is set, the witness's log, which TeleOps' own OS user cannot rewrite: every head it recorded must
be in the chain with the same hash, and none may be newer than the chain (docs/adr/0004-audit-witness.md).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from teleops.store.audit import GENESIS_HASH, AuditEvent, event_hash, iter_events, read_head
from teleops.store.audit_checkpoints import Checkpoint, CheckpointError, CheckpointLog
from teleops.store.database import Database
from teleops.witness.protocol import Witnessed, WitnessError

__all__ = ["Finding", "Tamper", "verify_audit"]


class Tamper(enum.StrEnum):
    EDITED = "edited"
    DELETED = "deleted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    RECHAINED = "re-chained"
    CHECKPOINT = "checkpoint file"
    WITNESS = "witness"
    APPROVAL = "approval broken"


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
    witnessed: int = 0  # heads the witness recorded and this check held the chain against
    witnessed_seq: int = 0  # the newest of them


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


def _walk(
    conn: Connection, checkpoints: list[Checkpoint], witnessed: list[Witnessed], *, anchor_missing: bool
) -> Finding:
    head_seq, head_hash = read_head(conn)
    if anchor_missing and head_seq > 0:
        return Finding(
            False,
            0,
            head_seq,
            0,
            Tamper.CHECKPOINT,
            None,
            f"the chain holds {head_seq} records but the checkpoint file is missing: it was deleted, or TeleOps "
            "stopped within seconds of its first records (it writes the file after each dispatch, every few seconds "
            "and at shutdown). Restore it from a backup; if TeleOps crashed right after its first records, that crash "
            "is the likely cause",
        )
    by_seq = {c.seq: c for c in checkpoints}
    by_witness = {w.seq: w for w in witnessed}
    requested: dict[str, dict[str, object]] = {}  # command subject → what its approval was asked for
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
        broken = _approval_broken(event, requested)
        if broken is not None:
            return bad(Tamper.APPROVAL, event.seq, broken)
        seen = by_witness.get(event.seq)
        if seen is not None and seen.hash != event.hash:
            return bad(
                Tamper.RECHAINED,
                event.seq,
                f"record {event.seq} has hash {event.hash[:12]}… but the witness recorded {seen.hash[:12]}… for it "
                f"(witness log line {seen.line}): the chain was rebuilt after the witness saw it",
            )
        expected_seq, prev_hash = event.seq + 1, event.hash
    newest = expected_seq - 1
    witnessed_seq = max(by_witness, default=0)
    if witnessed_seq > newest:
        return bad(
            Tamper.TRUNCATED,
            newest + 1,
            f"the newest record is {newest} but the witness recorded head {witnessed_seq}: records "
            f"{newest + 1}–{witnessed_seq} were removed (or the database was restored from an older backup)",
        )
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
    return Finding(True, count, head_seq, len(checkpoints), witnessed=len(witnessed), witnessed_seq=witnessed_seq)


# What an approval binds, as both records carry it (argv shown masked; argv_hmac binds a masked one's original).
_BOUND = ("host", "agent", "argv", "argv_hmac", "timeout_s")


def _approval_broken(event: AuditEvent, requested: dict[str, dict[str, object]]) -> str | None:
    """Remember what each approval was requested for; a dispatch of that command that differs from it is named:
    the command row was changed between the request and the dispatch (by a database writer or the controller)."""
    if event.action == "approval.requested":
        requested[event.subject] = {k: event.data[k] for k in _BOUND if k in event.data}
        return None
    if event.action != "command.dispatching" or event.subject not in requested:
        return None
    asked = requested.pop(event.subject)
    for key, value in asked.items():
        if key in event.data and event.data[key] != value:
            return (
                f"{event.subject} was dispatched with {key} {event.data[key]!r}, but its approval was requested "
                f"for {value!r}: the command changed after it was approved"
            )
    return None


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
    try:
        witnessed = await asyncio.to_thread(log.witnessed)
    except WitnessError as exc:
        return Finding(False, 0, 0, 0, Tamper.WITNESS, None, f"{exc}; the chain cannot be held against it")
    missing = not log.path.exists()
    return await db.run_in_transaction(lambda conn: _walk(conn, checkpoints, witnessed or [], anchor_missing=missing))
