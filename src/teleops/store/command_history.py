"""Reading command history for people: newest first, filtered by host, person and status, a page at a time.

The web UI's Commands and Fleet pages (routes/ui_commands.py, routes/ui_fleet.py) use it. Rows come without their
output (a list never shows it, and it can be 64 KiB a command). Paging is by id ("older than command N"), not by
offset, so a page stays the same while new commands arrive and a deep page costs no more than the first.

Who may read which command (commands/read_access.py) is decided by the caller over these rows: the host patterns
of a role's policy are shell-style globs that SQL cannot apply the same way, so this module filters only by what
the person asked for, and the caller reads further batches (`before`) until its page is full of readable rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import commands

__all__ = ["CommandQuery", "CommandSummary", "recent_commands_by_agent", "search_commands"]


@dataclass(frozen=True, slots=True)
class CommandQuery:
    host: str = ""  # the agent's name or the host as asked for (exact, case-insensitive)
    requester: str = ""  # exact user name
    status: str = ""  # one of store.commands.CommandStatus, or "" for any
    before: int | None = None  # only commands older than this id (the next page)
    limit: int = 50


@dataclass(frozen=True, slots=True)
class CommandSummary:
    """A command as a list shows it: everything but its output."""

    id: int
    requester: str
    host: str
    agent_name: str
    argv: list[str]
    status: str
    incident_id: int | None
    exit_code: int | None
    reason: str | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        begin = self.started_at or self.dispatched_at
        if begin is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - begin).total_seconds())


_COLUMNS = (
    commands.c.id,
    commands.c.requester,
    commands.c.host,
    commands.c.agent_name,
    commands.c.argv,
    commands.c.status,
    commands.c.incident_id,
    commands.c.exit_code,
    commands.c.reason,
    commands.c.created_at,
    commands.c.dispatched_at,
    commands.c.started_at,
    commands.c.finished_at,
)


def _summary(row: Any) -> CommandSummary:
    return CommandSummary(**dict(row._mapping))


async def search_commands(db: Database, query: CommandQuery) -> list[CommandSummary]:
    """Up to `query.limit` matching commands, newest first (ids below `query.before` when set).
    Raises StorageUnavailable."""
    statement = select(*_COLUMNS).order_by(commands.c.id.desc()).limit(query.limit)
    if query.host:
        # Both what was asked for and the agent it resolved to: people know hosts by either name.
        host = query.host.lower()
        statement = statement.where(or_(func.lower(commands.c.agent_name) == host, func.lower(commands.c.host) == host))
    if query.requester:
        statement = statement.where(commands.c.requester == query.requester)
    if query.status:
        statement = statement.where(commands.c.status == query.status)
    if query.before is not None:
        statement = statement.where(commands.c.id < query.before)
    return [_summary(row) for row in await db.all(statement)]


async def recent_commands_by_agent(
    db: Database, agent_names: Sequence[str], *, per_agent: int
) -> dict[str, list[CommandSummary]]:
    """The newest `per_agent` commands sent to each agent, newest first, in one read. Raises StorageUnavailable."""

    def read(conn: Connection) -> dict[str, list[CommandSummary]]:
        found: dict[str, list[CommandSummary]] = {}
        for name in dict.fromkeys(agent_names):
            statement = (
                select(*_COLUMNS).where(commands.c.agent_name == name).order_by(commands.c.id.desc()).limit(per_agent)
            )
            found[name] = [_summary(row) for row in conn.execute(statement).all()]
        return found

    return await db.read(read)
