"""Two-person approval state (docs/threat-model.md T22): one row per command that waits for a second person.

The row is bound to the command by `digest` = HMAC-SHA256 of the canonical (agent, argv, requester, command id,
timeout) under a key outside the database (`ArgvVault.binding_key`, derived from `<data_dir>/argv.key`): a vote
must name that digest (buttons carry its first characters), so a button for one request can never approve
another; and a command row changed by a database writer — another argv, host or timeout — no longer matches,
which the writer cannot repair without the key (issue #17.2; `commands/dispatch.dispatch_approved` refuses it).
Every vote, refusal and outcome is appended to the audit log in the same transaction as the state change. Rows
are claimed for dispatch exactly once.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection

from teleops.domain.command import TERMINAL, CommandStatus
from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import Id, UTCDateTime, commands, metadata

__all__ = [
    "DIGEST_PREFIX",
    "ApprovalRecord",
    "ApprovalRules",
    "ApprovalStatus",
    "Vote",
    "VoteResult",
    "approval_digest",
    "approvals",
    "cast_vote",
    "claim_for_dispatch",
    "due_approvals",
    "expire_approval",
    "get_approval",
    "open_approval",
]

# Characters of the digest a button carries (Telegram allows 64 bytes of button data).
DIGEST_PREFIX = 16

approvals = Table(
    "approvals",
    metadata,
    Column("command_id", Id, ForeignKey("commands.id"), primary_key=True, autoincrement=False),
    Column("digest", String(64), nullable=False),
    Column("requester", String(64), nullable=False),
    Column("command_text", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("needed", Integer, nullable=False),
    Column("approved_by", JSON, nullable=False),
    Column("decided_by", String(64)),
    Column("platform", String(32)),
    Column("chat_id", String(128)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Index("ix_approvals_status", "status"),
)


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # enough approvals; not yet dispatched
    DISPATCHED = "dispatched"  # claimed for dispatch (once)
    DENIED = "denied"
    EXPIRED = "expired"


class Vote(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class ApprovalRules:
    """How long a request waits (`ttl`) and how many distinct other people must approve it (`needed`)."""

    ttl: timedelta = timedelta(minutes=15)
    needed: int = 1


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    command_id: int
    digest: str
    requester: str
    command_text: str
    status: ApprovalStatus
    needed: int
    approved_by: tuple[str, ...]
    decided_by: str | None
    platform: str | None
    chat_id: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None

    @property
    def short_digest(self) -> str:
        return self.digest[:DIGEST_PREFIX]


@dataclass(frozen=True, slots=True)
class VoteResult:
    """What one vote did. `counted` False: refused (the message says why); `approval` is the state after it."""

    counted: bool
    message: str
    approval: ApprovalRecord | None


def approval_digest(
    *,
    agent: str,
    argv: Sequence[str],
    requester: str,
    command_id: int,
    timeout_s: int | None = None,
    key: bytes | None = None,
) -> str:
    """The hex digest of the canonical JSON of what is approved: exactly this argv, on this agent, for this person,
    as this request, with this timeout. HMAC-SHA256 under `key` (the controller always has one: a key outside the
    database); plain SHA-256 without one (library use, and step-up continuations, which bind no approval)."""
    fields: dict[str, object] = {"agent": agent.lower(), "argv": list(argv), "requester": requester}
    fields["request_id"] = command_id
    if timeout_s is not None:
        fields["timeout_s"] = timeout_s
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if key is None:
        return hashlib.sha256(canonical).hexdigest()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _record(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        command_id=int(row.command_id),
        digest=row.digest,
        requester=row.requester,
        command_text=row.command_text,
        status=ApprovalStatus(row.status),
        needed=int(row.needed),
        approved_by=tuple(row.approved_by or ()),
        decided_by=row.decided_by,
        platform=row.platform,
        chat_id=row.chat_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
    )


def _lock(conn: Connection, command_id: int) -> ApprovalRecord | None:
    # A no-op UPDATE first: the row lock (PostgreSQL) / write lock (SQLite) before reading, so votes serialise.
    row = conn.execute(
        update(approvals)
        .where(approvals.c.command_id == command_id)
        .values(status=approvals.c.status)
        .returning(*approvals.c)
    ).first()
    return None if row is None else _record(row)


async def open_approval(
    db: Database,
    *,
    command_id: int,
    digest: str,
    requester: str,
    command_text: str,
    rules: ApprovalRules,
    now: datetime,
    platform: str | None,
    chat_id: str | None,
    facts: dict[str, Any],
) -> ApprovalRecord:
    """Record that command `command_id` waits for approval, audited as `approval.requested`.

    Raises StorageUnavailable.
    """

    def apply(conn: Connection) -> ApprovalRecord:
        conn.execute(
            insert(approvals).values(
                command_id=command_id,
                digest=digest,
                requester=requester,
                command_text=command_text,
                status=ApprovalStatus.PENDING.value,
                needed=rules.needed,
                approved_by=[],
                platform=platform,
                chat_id=chat_id,
                created_at=now,
                expires_at=now + rules.ttl,
            )
        )
        data = {**facts, "digest": digest, "expires_at": (now + rules.ttl).isoformat(), "needed": rules.needed}
        append(conn, at=now, actor=requester, action="approval.requested", subject=f"command:{command_id}", data=data)
        row = conn.execute(select(approvals).where(approvals.c.command_id == command_id)).one()
        return _record(row)

    return await db.run_in_transaction(apply)


async def get_approval(db: Database, command_id: int) -> ApprovalRecord | None:
    row = await db.first(select(approvals).where(approvals.c.command_id == command_id))
    return None if row is None else _record(row)


def _refuse(conn: Connection, record: ApprovalRecord, voter: str, vote: Vote, now: datetime, why: str) -> VoteResult:
    data = {"vote": vote.value, "refused": why}
    append(conn, at=now, actor=voter, action="approval.refused", subject=f"command:{record.command_id}", data=data)
    return VoteResult(False, why, record)


async def cast_vote(
    db: Database,
    command_id: int,
    *,
    voter: str,
    vote: Vote,
    digest: str | None,
    eligible: str | None,
    now: datetime,
) -> VoteResult:
    """Count one approve/deny vote, atomically with its audit event.

    Refused (audited as `approval.refused`, nothing else changes): no such request, the voter is the requester,
    `digest` given and not a prefix of the request's digest, the request no longer pending, its command already
    ended (e.g. its requester cancelled it), or `eligible` set (the reason the voter's own policy would not let
    them run it). An expired request becomes `expired`
    (audited as `approval.expired`). One deny wins (`approval.denied`); `needed` distinct approvals make it
    `approved` (each vote audited as `approval.approved`). Raises StorageUnavailable.
    """

    def apply(conn: Connection) -> VoteResult:
        record = _lock(conn, command_id)
        if record is None:
            return VoteResult(False, f"command {command_id} is not waiting for approval; check the id", None)
        if voter == record.requester:
            return _refuse(conn, record, voter, vote, now, "you asked for this command, so a second person must decide")
        if digest is not None and not (
            len(digest) >= 8 and hmac.compare_digest(record.digest[: len(digest)], digest.lower())
        ):
            why = "this button belongs to another request or an older version of it; nothing was approved"
            return _refuse(conn, record, voter, vote, now, why)
        if record.status is not ApprovalStatus.PENDING:
            who = f" by {record.decided_by}" if record.decided_by else ""
            return _refuse(conn, record, voter, vote, now, f"command {command_id} was already {record.status}{who}")
        command = conn.execute(select(commands.c.status, commands.c.reason).where(commands.c.id == command_id)).first()
        if command is not None and CommandStatus(command.status) in TERMINAL:  # e.g. its requester cancelled it
            why = f"command {command_id} already ended ({command.status}: {command.reason or 'no reason recorded'})"
            return _refuse(conn, record, voter, vote, now, why + "; there is nothing left to approve")
        if now >= record.expires_at:
            expired = _finish(conn, record, ApprovalStatus.EXPIRED, None, now)
            append(conn, at=now, actor=voter, action="approval.expired", subject=f"command:{command_id}", data={})
            return VoteResult(False, f"the request for command {command_id} expired; ask for it again", expired)
        if eligible is not None:
            return _refuse(conn, record, voter, vote, now, eligible)
        subject = f"command:{command_id}"
        if vote is Vote.DENY:
            denied = _finish(conn, record, ApprovalStatus.DENIED, voter, now)
            append(conn, at=now, actor=voter, action="approval.denied", subject=subject, data={"digest": record.digest})
            return VoteResult(True, f"command {command_id} denied by {voter}; it will not run", denied)
        voters = tuple(dict.fromkeys((*record.approved_by, voter)))
        status = ApprovalStatus.APPROVED if len(voters) >= record.needed else ApprovalStatus.PENDING
        conn.execute(
            update(approvals)
            .where(approvals.c.command_id == command_id)
            .values(
                approved_by=list(voters),
                status=status.value,
                decided_by=voter if status is ApprovalStatus.APPROVED else None,
                decided_at=now if status is ApprovalStatus.APPROVED else None,
            )
        )
        data = {"digest": record.digest, "approvals": len(voters), "needed": record.needed}
        append(conn, at=now, actor=voter, action="approval.approved", subject=subject, data=data)
        after = _record(conn.execute(select(approvals).where(approvals.c.command_id == command_id)).one())
        if status is ApprovalStatus.APPROVED:
            return VoteResult(True, f"command {command_id} approved by {', '.join(voters)}", after)
        return VoteResult(True, f"approval {len(voters)} of {record.needed} for command {command_id} counted", after)

    return await db.run_in_transaction(apply)


def _finish(
    conn: Connection, record: ApprovalRecord, status: ApprovalStatus, by: str | None, now: datetime
) -> ApprovalRecord:
    conn.execute(
        update(approvals)
        .where(approvals.c.command_id == record.command_id)
        .values(status=status.value, decided_by=by, decided_at=now)
    )
    return _record(conn.execute(select(approvals).where(approvals.c.command_id == record.command_id)).one())


async def claim_for_dispatch(db: Database, command_id: int, *, now: datetime) -> ApprovalRecord | None:
    """approved → dispatched, once and only before it expires. None when it was not approved, already claimed,
    or expired (then it becomes `expired`, audited)."""

    def apply(conn: Connection) -> ApprovalRecord | None:
        record = _lock(conn, command_id)
        if record is None or record.status is not ApprovalStatus.APPROVED:
            return None
        if now >= record.expires_at:
            _finish(conn, record, ApprovalStatus.EXPIRED, None, now)
            append(conn, at=now, actor="system", action="approval.expired", subject=f"command:{command_id}", data={})
            return None
        conn.execute(
            update(approvals).where(approvals.c.command_id == command_id).values(status=ApprovalStatus.DISPATCHED.value)
        )
        return _record(conn.execute(select(approvals).where(approvals.c.command_id == command_id)).one())

    return await db.run_in_transaction(apply)


async def expire_approval(db: Database, command_id: int, *, now: datetime) -> bool:
    """pending → expired once its time is up (audited). True when this call expired it."""

    def apply(conn: Connection) -> bool:
        record = _lock(conn, command_id)
        if record is None or record.status is not ApprovalStatus.PENDING or now < record.expires_at:
            return False
        _finish(conn, record, ApprovalStatus.EXPIRED, None, now)
        append(conn, at=now, actor="system", action="approval.expired", subject=f"command:{command_id}", data={})
        return True

    return await db.run_in_transaction(apply)


async def due_approvals(db: Database, *, now: datetime) -> list[int]:
    """Command ids of pending approvals whose time is up (to be expired)."""
    query = select(approvals.c.command_id).where(
        approvals.c.status == ApprovalStatus.PENDING.value, approvals.c.expires_at <= now
    )
    return [int(row[0]) for row in await db.all(query)]
