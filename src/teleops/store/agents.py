"""The agents table: who is connected, from where, and when we last heard from them — and which host names each
one answers for (docs/threat-model.md T32).

An agent is who its token says (its name). The hostname and `host=` label it announces are claims: the first
connection binds them, if no other agent answers for those names yet; later they change only by an admin
(`bind_agent`, `teleops agents bind`). A claim that differs from the binding, or names another agent's host, is
not taken: host resolution keeps using the binding, and `claim_conflict` says why, for admins to see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.schema import agents

__all__ = [
    "AgentRecord",
    "bind_agent",
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
    bound_hostname: str | None = None
    bound_host: str | None = None
    claim_conflict: str | None = None


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
    bind: bool = True,
) -> AgentRecord:
    """Insert or refresh the agent called `name` and mark it online; bind its claimed host names at its first
    connection (see the module docstring). The record's `claim_conflict` is set when a claim was not taken.
    `bind=False` (the controller's embedded local agent): it answers only to its name, so it never takes the
    machine's hostname from a real agent there. Raises StorageUnavailable."""

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
        claimed_host = labels.get("host") or None
        found = conn.execute(select(agents).where(agents.c.name == name)).first()
        conflicts: list[str] = []
        if not bind:
            values |= {"bound_hostname": None, "bound_host": None}
        elif found is None:
            bound_hostname = _unclaimed(conn, name, hostname, conflicts, "hostname")
            bound_host = _unclaimed(conn, name, claimed_host, conflicts, "host label") if claimed_host else None
            if bound_host is not None and bound_host.lower() == (bound_hostname or "").lower():
                bound_host = None  # the same name twice
            values |= {"bound_hostname": bound_hostname, "bound_host": bound_host}
        else:
            for what, claim, bound in (
                ("hostname", hostname, found.bound_hostname),
                ("host label", claimed_host, found.bound_host),
            ):
                if claim and (bound or "").lower() != claim.lower():
                    conflicts.append(
                        f"claims {what} {claim!r} but is bound to {bound!r}; an admin can rebind it with "
                        f"`teleops agents bind {name} --{'hostname' if what == 'hostname' else 'host'} {claim}`"
                    )
        values["claim_conflict"] = "; ".join(conflicts)[:1024] or None
        if found is None:
            conn.execute(insert(agents).values(name=name, **values))
        else:
            conn.execute(update(agents).where(agents.c.id == found.id).values(**values))
        return _record(conn.execute(select(agents).where(agents.c.name == name)).one())

    return await db.run_in_transaction(apply)


def _answered_by_another(conn: Connection, name: str, host: str, *, label: bool) -> str | None:
    """The other agent that already answers for `host`: by its name or bound hostname, and for a hostname also
    by its bound `host` label. A `host` label may be shared (a group: resolution refuses it as ambiguous rather
    than pick one), so it does not conflict with other agents' labels."""
    lowered = host.lower()
    columns = [func.lower(agents.c.name), func.lower(agents.c.bound_hostname)]
    if not label:
        columns.append(func.lower(agents.c.bound_host))
    row = conn.execute(
        select(agents.c.name).where(agents.c.name != name, or_(*(column == lowered for column in columns)))
    ).first()
    return None if row is None else str(row.name)


def _unclaimed(conn: Connection, name: str, claim: str | None, conflicts: list[str], what: str) -> str | None:
    if not claim or not _storable(claim):
        return None
    other = _answered_by_another(conn, name, claim, label=what != "hostname")
    if other is None:
        return claim
    conflicts.append(f"claims {what} {claim!r}, which agent {other!r} answers for; not bound")
    return None


async def bind_agent(
    db: Database, name: str, *, hostname: str | None, host: str | None, by: str, now: datetime
) -> AgentRecord:
    """An admin sets the host names agent `name` answers for (None: none). Audited as `agent.bound`. Raises
    LookupError for an unknown agent and ValueError when another agent answers for one of the names."""

    def apply(conn: Connection) -> AgentRecord:
        found = conn.execute(select(agents).where(agents.c.name == name)).first()
        if found is None:
            raise LookupError(f"no agent {name!r}; `teleops agents list` shows the known ones")
        for value, label in ((hostname, False), (host, True)):
            other = _answered_by_another(conn, name, value, label=label) if value else None
            if other is not None:
                raise ValueError(
                    f"agent {other!r} already answers for {value!r}; release it first with "
                    f"`teleops agents bind {other}` (no options: it then answers only to its name)"
                )
        conn.execute(
            update(agents)
            .where(agents.c.id == found.id)
            .values(bound_hostname=hostname, bound_host=host, claim_conflict=None)
        )
        append(
            conn,
            at=now,
            actor=by,
            action="agent.bound",
            subject=f"agent:{name}",
            data={
                "hostname": hostname,
                "host": host,
                "was": {"hostname": found.bound_hostname, "host": found.bound_host},
            },
        )
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
    """The agents `commands.hosts.resolve_host` needs to decide who serves `host`, read in one go without
    loading every agent: the one named `host`; else the one bound to that hostname (case-insensitive); else the
    one bound to the `host=<host>` label; else all of them (so the "unknown host" error can name the known
    ones). Bound names, never what an agent claims now: an agent cannot steer another host's commands (T32)."""
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
        func.lower(agents.c.bound_hostname) == bindparam("wanted_lower"),
        agents.c.bound_host == bindparam("wanted"),
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
