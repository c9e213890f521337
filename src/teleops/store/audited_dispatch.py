"""Write-ahead audit for dispatch (THREATS T30): `command.dispatching` commits with queued → running, or neither."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection

from teleops.store.audit import AuditEvent, append
from teleops.store.commands import CommandStatus
from teleops.store.database import Database
from teleops.store.schema import commands

__all__ = ["mark_dispatched_audited"]


async def mark_dispatched_audited(
    db: Database, command_id: int, *, now: datetime, actor: str, data: Mapping[str, Any]
) -> AuditEvent | None:
    """queued → running plus the `command.dispatching` audit event, in one committed transaction.

    Returns the event, or None when the command was no longer queued (cancelled; nothing written). The exec may
    be sent only after this returns an event. Raises AuditUnavailable or StorageUnavailable when either write
    fails: then neither happened and the command must not run.
    """

    def apply(conn: Connection) -> AuditEvent | None:
        result = conn.execute(
            update(commands)
            .where(commands.c.id == command_id, commands.c.status == CommandStatus.QUEUED.value)
            .values(status=CommandStatus.RUNNING.value, dispatched_at=now)
        )
        if not result.rowcount:
            return None
        return append(
            conn, at=now, actor=actor, action="command.dispatching", subject=f"command:{command_id}", data=data
        )

    return await db.run_in_transaction(apply)
