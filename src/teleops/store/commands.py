"""The commands table: one row per requested command, moved through its states by committed writes.

`queued` (recorded) → `running` (marked dispatched, committed *before* the exec is sent) → one terminal
state. `lost` is terminal for the requester, but a result the agent reports later still replaces it, once.

`argv` is the command as shown (secrets masked); a masked command's original is in `sealed_argv` until it is
dispatched or ends (store/sealed_argv.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from teleops.domain.command import (
    CommandNotFound,
    CommandRecord,
    CommandStatus,
    Finish,
    NewCommand,
    NotThisAgentsCommand,
)
from teleops.domain.incident import IncidentNotFound, TimelineKind
from teleops.store.database import Database
from teleops.store.schema import commands, incidents, timeline

__all__ = [
    "append_output",
    "create_command",
    "ended_among",
    "finish_command",
    "finish_reported",
    "get_command",
    "get_commands",
    "in_flight_commands",
    "insert_commands",
    "list_commands",
    "mark_dispatched",
    "mark_started",
    "record_of_row",
]

EXCERPT_CHARS = 500


def record_of_row(row: Any) -> CommandRecord:
    """The record of one row of the commands table (for store modules that read it in their own statements)."""
    return CommandRecord(**dict(row._mapping))


_record = record_of_row


def _get(conn: Connection, command_id: int) -> CommandRecord:
    row = conn.execute(select(commands).where(commands.c.id == command_id)).first()
    if row is None:
        raise CommandNotFound(command_id)
    return _record(row)


# Built once (every command is inserted through these).
_INCIDENT_EXISTS = select(incidents.c.id).where(incidents.c.id == bindparam("incident_id"))
_INSERT_COMMANDS = insert(commands).returning(commands.c.id, sort_by_parameter_order=True)
_INSERT_TIMELINE = insert(timeline)


def insert_commands(
    conn: Connection, many: Sequence[NewCommand], *, now: datetime, dispatched: bool = False
) -> list[CommandRecord]:
    """Insert commands in the caller's transaction with one multi-row statement, in order: `queued`, or `running`
    when `dispatched` (then the caller must also write their `command.dispatching` audit events in that
    transaction). Adds `command.requested` to each one's incident timeline. Raises IncidentNotFound.

    A dispatched command's `sealed_argv` is not stored (the exec is sent from the returned record), a queued
    one's is, until it is dispatched or ends."""
    for incident_id in {new.incident_id for new in many if new.incident_id is not None}:
        if conn.execute(_INCIDENT_EXISTS, {"incident_id": incident_id}).first() is None:
            raise IncidentNotFound(incident_id)
    if not many:
        return []
    status = CommandStatus.RUNNING if dispatched else CommandStatus.QUEUED
    dispatched_at = now if dispatched else None
    rows = [
        {
            "requester": new.requester, "host": new.host, "agent_name": new.agent_name, "argv": list(new.argv),
            "status": status.value, "timeout_s": new.timeout_s, "incident_id": new.incident_id, "output": "",
            "output_bytes": 0, "truncated": False, "created_at": now, "dispatched_at": dispatched_at,
            "sealed_argv": None if dispatched else new.sealed_argv,
        }
        for new in many
    ]  # fmt: skip
    ids = conn.execute(_INSERT_COMMANDS, rows).scalars().all()
    events: list[dict[str, Any]] = [
        {"incident_id": new.incident_id, "at": now, "kind": TimelineKind.COMMAND_REQUESTED.value,
         "actor": new.requester, "data": {"command_id": command_id, "host": new.host, "argv": list(new.argv)}}
        for command_id, new in zip(ids, many, strict=True)
        if new.incident_id is not None
    ]  # fmt: skip
    if events:
        conn.execute(_INSERT_TIMELINE, events)
    return [
        CommandRecord(
            id=command_id, requester=new.requester, host=new.host, agent_name=new.agent_name, argv=list(new.argv),
            status=status.value, timeout_s=new.timeout_s, incident_id=new.incident_id, exit_code=None, signal=None,
            output="", output_bytes=0, truncated=False, reason=None, created_at=now, dispatched_at=dispatched_at,
            started_at=None, finished_at=None, sealed_argv=new.sealed_argv,
        )
        for command_id, new in zip(ids, many, strict=True)
    ]  # fmt: skip


async def create_command(
    db: Database,
    *,
    requester: str,
    host: str,
    agent_name: str,
    argv: list[str],
    timeout_s: int,
    now: datetime,
    incident_id: int | None = None,
    sealed_argv: str | None = None,
) -> CommandRecord:
    """Record a `queued` command (and `command.requested` on its incident). `argv` is what may be shown,
    `sealed_argv` the sealed original when that differs. Raises IncidentNotFound."""

    def apply(conn: Connection) -> CommandRecord:
        [record] = insert_commands(
            conn, [NewCommand(requester, host, agent_name, list(argv), timeout_s, incident_id, sealed_argv)], now=now
        )
        return record

    return await db.write(apply)


async def mark_dispatched(db: Database, command_id: int, *, now: datetime) -> bool:
    """queued → running, committed; the exec may be sent only after this returns True."""

    def apply(conn: Connection) -> bool:
        result = conn.execute(
            update(commands)
            .where(commands.c.id == command_id, commands.c.status == CommandStatus.QUEUED.value)
            .values(status=CommandStatus.RUNNING.value, dispatched_at=now, sealed_argv=None)
        )
        return bool(result.rowcount)

    return await db.write(apply)


async def mark_started(db: Database, command_id: int, *, now: datetime) -> None:
    def apply(conn: Connection) -> None:
        conn.execute(
            update(commands).where(commands.c.id == command_id, commands.c.started_at.is_(None)).values(started_at=now)
        )

    await db.write(apply)


async def append_output(db: Database, command_id: int, text: str, *, cap_chars: int) -> None:
    """Add streamed output to a running command, keeping at most `cap_chars` (the exit brings the final text)."""

    def apply(conn: Connection) -> None:
        row = conn.execute(select(commands.c.output, commands.c.status).where(commands.c.id == command_id)).first()
        if row is None or row.status != CommandStatus.RUNNING.value or len(row.output) >= cap_chars:
            return
        output = (row.output + text)[:cap_chars]
        conn.execute(update(commands).where(commands.c.id == command_id).values(output=output))

    await db.write(apply)


async def finish_command(
    db: Database, command_id: int, finish: Finish, *, now: datetime, replace_lost: bool = False
) -> CommandRecord | None:
    """Record the terminal state once. Returns the record if this call changed it, None if it was already final.

    `replace_lost=True` (a result the agent really reported) also replaces an earlier `lost`.
    Adds `command.finished` to the incident's timeline. Raises CommandNotFound.
    """
    statement = _FINISH_REPLACING_LOST if replace_lost else _FINISH
    params = _finish_params(command_id, finish, now)
    return await _finish(db, statement, params, command_id, agent_name=None, duration_s=finish.duration_s)


async def finish_reported(
    db: Database, command_id: int, finish: Finish, *, agent_name: str, now: datetime, replace_lost: bool
) -> CommandRecord | None:
    """Record an outcome that agent `agent_name` reported (its result, or its refusal to run), once.

    Only a command dispatched to that agent and still running there (or `lost`, with `replace_lost`) can be
    ended this way: a queued command (waiting for approval, or not sent yet) never is. Returns the record if
    this call changed it, None if it was final already. Raises CommandNotFound, and NotThisAgentsCommand when
    the command exists but was sent to another agent or never sent: the reporting agent is lying (T13/T14).
    """
    statement = _REPORTED_REPLACING_LOST if replace_lost else _REPORTED
    params = {**_finish_params(command_id, finish, now), "reporting_agent": agent_name}
    return await _finish(db, statement, params, command_id, agent_name=agent_name, duration_s=finish.duration_s)


def _finish_params(command_id: int, finish: Finish, now: datetime) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "new_status": finish.status.value,
        "new_finished_at": now,
        "new_reason": finish.reason,
        "new_exit_code": finish.exit_code,
        "new_signal": finish.signal,
        "new_output": finish.output,
        "new_output_bytes": finish.output_bytes,
        "new_truncated": finish.truncated,
        "new_started_at": finish.started_at,
    }


async def _finish(
    db: Database,
    statement: Any,
    params: dict[str, Any],
    command_id: int,
    *,
    agent_name: str | None,
    duration_s: float | None,
) -> CommandRecord | None:
    def apply(conn: Connection) -> CommandRecord | None:
        row = conn.execute(statement, params).first()
        if row is None:
            existing = _get(conn, command_id)  # raises CommandNotFound; else it was final already, or not ours
            if agent_name is not None and (existing.agent_name != agent_name or existing.dispatched_at is None):
                raise NotThisAgentsCommand(command_id, agent_name)
            return None
        record = _record(row)
        if record.incident_id is not None:
            conn.execute(
                insert(timeline).values(
                    incident_id=record.incident_id,
                    at=params["new_finished_at"],
                    kind=TimelineKind.COMMAND_FINISHED.value,
                    actor=record.requester,
                    data={
                        "command_id": record.id,
                        "host": record.host,
                        "argv": record.argv,
                        "status": record.status,
                        "exit_code": record.exit_code,
                        "duration_s": duration_s if duration_s is not None else record.duration_s,
                        "output_excerpt": record.output[-EXCERPT_CHARS:],
                        "reason": record.reason,
                    },
                )
            )
        return record

    return await db.write(apply)


def _finish_statement(open_states: Sequence[CommandStatus], *, by_agent: bool = False) -> Any:
    """UPDATE … RETURNING that ends a command still in `open_states`: built once (building it cost more than
    running it), with every value a parameter; a value left None keeps the stored one, and `started_at` is only
    filled in when the start was not recorded yet."""
    c = commands.c

    def keep_unless_given(name: str, column: Any) -> Any:
        return func.coalesce(bindparam(f"new_{name}", type_=column.type), column)

    where = [c.id == bindparam("command_id"), c.status.in_([s.value for s in open_states])]
    if by_agent:  # only the agent it was sent to may end it (finish_reported)
        where += [c.agent_name == bindparam("reporting_agent"), c.dispatched_at.is_not(None)]
    return (
        update(commands)
        .where(*where)
        .values(
            status=bindparam("new_status", type_=c.status.type),
            finished_at=bindparam("new_finished_at", type_=c.finished_at.type),
            reason=bindparam("new_reason", type_=c.reason.type),
            exit_code=keep_unless_given("exit_code", c.exit_code),
            signal=keep_unless_given("signal", c.signal),
            output=keep_unless_given("output", c.output),
            output_bytes=keep_unless_given("output_bytes", c.output_bytes),
            truncated=keep_unless_given("truncated", c.truncated),
            started_at=func.coalesce(c.started_at, bindparam("new_started_at", type_=c.started_at.type)),
            sealed_argv=None,  # an ended command is never sent: its original is wiped
        )
        .returning(*c)
    )


_FINISH = _finish_statement([CommandStatus.QUEUED, CommandStatus.RUNNING])
_FINISH_REPLACING_LOST = _finish_statement([CommandStatus.QUEUED, CommandStatus.RUNNING, CommandStatus.LOST])
_REPORTED = _finish_statement([CommandStatus.RUNNING], by_agent=True)
_REPORTED_REPLACING_LOST = _finish_statement([CommandStatus.RUNNING, CommandStatus.LOST], by_agent=True)


async def get_command(db: Database, command_id: int) -> CommandRecord:
    """Raises CommandNotFound."""
    row = await db.first(select(commands).where(commands.c.id == command_id))
    if row is None:
        raise CommandNotFound(command_id)
    return _record(row)


async def get_commands(db: Database, ids: Sequence[int]) -> list[CommandRecord]:
    """The commands with these ids that exist, in the order of `ids`."""
    rows = await db.all(select(commands).where(commands.c.id.in_(list(ids))))
    found = {row.id: _record(row) for row in rows}
    return [found[i] for i in ids if i in found]


async def list_commands(db: Database, *, limit: int = 100, status: CommandStatus | None = None) -> list[CommandRecord]:
    """Newest first."""
    query = select(commands).order_by(commands.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(commands.c.status == status.value)
    rows = await db.all(query)
    return [_record(row) for row in rows]


async def in_flight_commands(db: Database, *, agent_name: str | None = None) -> list[CommandRecord]:
    """Commands that were sent and have no final state yet (status `running`), oldest first."""
    query = select(commands).where(commands.c.status == CommandStatus.RUNNING.value).order_by(commands.c.id)
    if agent_name is not None:
        query = query.where(commands.c.agent_name == agent_name)
    rows = await db.all(query)
    return [_record(row) for row in rows]


async def ended_among(db: Database, ids: Sequence[int]) -> set[int]:
    """Which of these commands are no longer `queued` or `running` (one indexed read, for waiters that were not
    woken: another replica ended them and its wake-up was lost)."""
    if not ids:
        return set()
    open_states = [CommandStatus.QUEUED.value, CommandStatus.RUNNING.value]
    rows = await db.all(
        select(commands.c.id).where(commands.c.id.in_(list(ids)), commands.c.status.not_in(open_states))
    )
    return {int(row.id) for row in rows}
