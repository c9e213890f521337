"""Write-ahead audit for dispatch (docs/threat-model.md T30): `command.dispatching` commits with the command's `running`
state, or neither does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection

from teleops.domain.command import CommandRecord, CommandStatus, NewCommand
from teleops.store.audit import AuditEvent, append, append_many
from teleops.store.commands import insert_commands
from teleops.store.database import Database, NotDurable
from teleops.store.schema import commands

__all__ = [
    "DispatchFacts",
    "create_dispatched_audited",
    "create_many_dispatched_audited",
    "mark_dispatched_audited",
]


async def mark_dispatched_audited(
    db: Database, command_id: int, *, now: datetime, actor: str, data: Mapping[str, Any]
) -> AuditEvent | None:
    """queued → running plus the `command.dispatching` audit event, in one committed transaction. The sealed
    original argv is wiped from the row (the caller sends the exec from the record it read before).

    Returns the event, or None when the command was no longer queued (cancelled; nothing written). The exec may
    be sent only after this returns an event. Raises AuditUnavailable or StorageUnavailable when either write
    fails: then neither happened and the command must not run.
    """

    def apply(conn: Connection) -> AuditEvent | None:
        result = conn.execute(
            update(commands)
            .where(commands.c.id == command_id, commands.c.status == CommandStatus.QUEUED.value)
            .values(status=CommandStatus.RUNNING.value, dispatched_at=now, sealed_argv=None)
        )
        if not result.rowcount:
            return None
        return append(
            conn, at=now, actor=actor, action="command.dispatching", subject=f"command:{command_id}", data=data
        )

    return await db.write(apply)


@dataclass(frozen=True, slots=True)
class DispatchFacts(NewCommand):
    """A command about to be sent, with what its `command.dispatching` (or refusal) audit event says."""

    audit_data: Mapping[str, Any] = field(default_factory=dict)


async def create_dispatched_audited(
    db: Database, facts: DispatchFacts, *, now: datetime
) -> tuple[CommandRecord, AuditEvent]:
    """Record a command straight as `running` with its `command.dispatching` audit event: one committed
    transaction (one fsync) for a command that needs nobody else's approval. The exec may be sent once this
    returns. Raises AuditUnavailable or StorageUnavailable (nothing was written: the caller records the
    refusal), IncidentNotFound, and NotDurable (its `applied` is the (record, event) written)."""
    try:
        [created] = await create_many_dispatched_audited(db, [facts], now=now)
    except NotDurable as exc:  # hand over this one command and its event, as this function returns them
        raise NotDurable(str(exc), exc.applied[0]) from exc
    return created


async def create_many_dispatched_audited(
    db: Database, many: Sequence[DispatchFacts], *, now: datetime
) -> list[tuple[CommandRecord, AuditEvent]]:
    """`create_dispatched_audited` for several commands (a fan-out) in one transaction: all or none."""

    def apply(conn: Connection) -> list[tuple[CommandRecord, AuditEvent]]:
        records = insert_commands(conn, many, now=now, dispatched=True)
        events = append_many(
            conn,
            at=now,
            entries=[
                (f.requester, "command.dispatching", f"command:{record.id}", f.audit_data)
                for f, record in zip(many, records, strict=True)
            ],
        )
        return list(zip(records, events, strict=True))

    return await db.write(apply)
