"""The agents table: who is connected, from where, and when we last heard from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from teleops.store.database import Database
from teleops.store.schema import agents

__all__ = [
    "AgentRecord",
    "get_agent",
    "host_candidates",
    "list_agents",
    "mark_agent_offline",
    "register_agent",
    "touch_agent",
]


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: int
    name: str
    hostname: str
    version: str
    labels: dict[str, str]
    allowlist_digest: str
    online: bool
    connected_at: datetime | None
    last_seen_at: datetime | None


def _record(row: Any) -> AgentRecord:
    return AgentRecord(**dict(row._mapping))


async def register_agent(
    db: Database,
    *,
    name: str,
    hostname: str,
    version: str,
    labels: dict[str, str],
    allowlist_digest: str,
    now: datetime,
) -> AgentRecord:
    """Insert or refresh the agent called `name` and mark it online. Raises StorageUnavailable."""

    def apply(conn: Connection) -> AgentRecord:
        values: dict[str, Any] = {
            "hostname": hostname,
            "version": version,
            "labels": labels,
            "allowlist_digest": allowlist_digest,
            "online": True,
            "connected_at": now,
            "last_seen_at": now,
        }
        found = conn.execute(select(agents.c.id).where(agents.c.name == name)).first()
        if found is None:
            conn.execute(insert(agents).values(name=name, **values))
        else:
            conn.execute(update(agents).where(agents.c.id == found.id).values(**values))
        return _record(conn.execute(select(agents).where(agents.c.name == name)).one())

    return await db.run_in_transaction(apply)


async def touch_agent(db: Database, name: str, *, now: datetime) -> None:
    """The agent is alive (a heartbeat or any message)."""

    def apply(conn: Connection) -> None:
        conn.execute(update(agents).where(agents.c.name == name).values(last_seen_at=now, online=True))

    await db.run_in_transaction(apply)


async def mark_agent_offline(db: Database, name: str, *, now: datetime) -> None:
    def apply(conn: Connection) -> None:
        conn.execute(update(agents).where(agents.c.name == name).values(online=False, last_seen_at=now))

    await db.run_in_transaction(apply)


async def list_agents(db: Database) -> list[AgentRecord]:
    """Every agent ever registered, by name."""
    rows = await db.all(select(agents).order_by(agents.c.name))
    return [_record(row) for row in rows]


async def host_candidates(db: Database, host: str) -> list[AgentRecord]:
    """The agents `pipeline.hosts.resolve_host` needs to decide who serves `host`, read in one go without
    loading every agent: the one named `host`; else those with that hostname (case-insensitive); else those
    labelled `host=<host>`; else all of them (so the "unknown host" error can name the known ones)."""
    wanted = host.strip()

    def read(conn: Connection) -> list[AgentRecord]:
        if _storable(wanted):  # else no agent is named so (and PostgreSQL refuses the text): the caller says unknown
            params = {"wanted": wanted, "wanted_lower": wanted.lower()}
            for statement in _CANDIDATES:
                rows = conn.execute(statement, params).all()
                if rows:
                    return [_record(row) for row in rows]
        return [_record(row) for row in conn.execute(_ALL_AGENTS).all()]

    return await db.read(read)


# Built once (every command resolves its host; building the statements cost more than running them).
_ALL_AGENTS = select(agents).order_by(agents.c.name)
_CANDIDATES = tuple(
    select(agents).where(condition).order_by(agents.c.name)
    for condition in (
        agents.c.name == bindparam("wanted"),
        func.lower(agents.c.hostname) == bindparam("wanted_lower"),
        agents.c.labels["host"].as_string() == bindparam("wanted"),
    )
)


def _storable(text: str) -> bool:
    """Whether `text` can be sent to the database as a string: UTF-8 encodable (no lone surrogates), no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


async def get_agent(db: Database, name: str) -> AgentRecord | None:
    row = await db.first(select(agents).where(agents.c.name == name))
    return _record(row) if row is not None else None
