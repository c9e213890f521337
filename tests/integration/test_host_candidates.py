"""`host_candidates` reads only the agents that can serve a host, and `resolve_host` decides the same as it
would over every agent: by name, then hostname (any case), then the `host` label, else "unknown" naming all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Connection

from teleops.commands.hosts import AmbiguousHost, UnknownHost, resolve_host
from teleops.store.agents import AgentRecord, bind_agent, host_candidates, list_agents, register_agent
from teleops.store.audit import iter_events
from teleops.store.database import Database

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
AGENTS = [
    ("web-1", "web-1.prod.example.org", {"host": "frontend"}),
    ("web-2", "Web-2.prod.example.org", {"host": "frontend"}),
    ("db-1", "db-1.prod.example.org", {"host": "database"}),
    ("localhost", "vm", {}),
    ("vm", "other", {}),  # a name equal to another agent's hostname: the name wins
]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.migrate()
    for name, hostname, labels in AGENTS:
        await register_agent(
            database, name=name, hostname=hostname, version="1", labels=labels, allowlist_digest="", now=NOW
        )
    yield database
    await database.close()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("web-1", ["web-1"]),
        ("WEB-2.prod.example.org", ["web-2"]),
        ("database", ["db-1"]),
        ("vm", ["vm"]),
        (" db-1 ", ["db-1"]),
        ("frontend", ["web-1", "web-2"]),
        ("nowhere", ["db-1", "localhost", "vm", "web-1", "web-2"]),
        ("web-1\x00", ["db-1", "localhost", "vm", "web-1", "web-2"]),  # NUL: PostgreSQL refuses it as text
        ("web-\udb56", ["db-1", "localhost", "vm", "web-1", "web-2"]),  # a lone surrogate is not UTF-8
    ],
)
async def test_only_the_agents_that_can_serve_the_host_are_read(db: Database, host: str, expected: list[str]) -> None:
    assert [agent.name for agent in await host_candidates(db, host)] == expected


@pytest.mark.parametrize(
    "host", ["web-1", "web-2.PROD.example.org", "database", "vm", "localhost", "frontend", "x", "\x00", "\udb56"]
)
async def test_resolution_is_the_same_as_over_every_agent(db: Database, host: str) -> None:
    def outcome(candidates: list[AgentRecord]) -> str:
        try:
            return resolve_host(host, candidates).name
        except (UnknownHost, AmbiguousHost) as exc:
            return str(exc)

    assert outcome(list(await host_candidates(db, host))) == outcome(list(await list_agents(db)))


async def test_an_agent_cannot_claim_another_agents_host_names(db: Database) -> None:
    """docs/threat-model.md T32: a new agent announcing web-1's hostname, or an existing one announcing a new hostname, is
    not bound to it: commands for that name keep going where they went, and the conflict is recorded."""
    rogue = await register_agent(
        db, name="rogue", hostname="web-1.prod.example.org", version="1", labels={"host": "web-1"},
        allowlist_digest="", now=NOW,
    )  # fmt: skip
    assert (rogue.bound_hostname, rogue.bound_host) == (None, None)
    assert rogue.claim_conflict is not None
    assert "'web-1'" in rogue.claim_conflict
    assert [a.name for a in await host_candidates(db, "web-1.prod.example.org")] == ["web-1"]

    moved = await register_agent(
        db, name="db-1", hostname="web-2.prod.example.org", version="1", labels={"host": "database"},
        allowlist_digest="", now=NOW,
    )  # fmt: skip
    assert moved.bound_hostname == "db-1.prod.example.org"  # the binding stays
    assert moved.claim_conflict is not None
    assert "teleops agents bind db-1 --hostname web-2.prod.example.org" in moved.claim_conflict
    assert [a.name for a in await host_candidates(db, "web-2.prod.example.org")] == ["web-2"]


async def test_an_admin_rebinds_an_agent_audited_and_never_onto_another_agents_name(db: Database) -> None:
    with pytest.raises(ValueError, match="agent 'web-1' already answers for"):
        await bind_agent(db, "db-1", hostname="web-1.prod.example.org", host=None, by="cli", now=NOW)
    with pytest.raises(LookupError):
        await bind_agent(db, "nobody", hostname="x", host=None, by="cli", now=NOW)
    bound = await bind_agent(db, "db-1", hostname="db-1.new.example.org", host="database", by="cli", now=NOW)
    assert (bound.bound_hostname, bound.bound_host, bound.claim_conflict) == ("db-1.new.example.org", "database", None)
    assert [a.name for a in await host_candidates(db, "DB-1.new.example.org")] == ["db-1"]

    def actions(conn: Connection) -> list[str]:
        return [event.action for event in iter_events(conn)]

    assert "agent.bound" in await db.run_in_transaction(actions)


async def test_unbound_names_are_not_taken_by_what_an_agent_claims_now(db: Database) -> None:
    """Resolution falls back to every agent for a name nobody is bound to; it must still use bindings only."""
    await register_agent(
        db, name="db-1", hostname="web-9.prod.example.org", version="1", labels={"host": "mail"},
        allowlist_digest="", now=NOW,
    )  # fmt: skip
    with pytest.raises(UnknownHost):
        resolve_host("web-9.prod.example.org", await host_candidates(db, "web-9.prod.example.org"))
    with pytest.raises(UnknownHost):
        resolve_host("mail", await host_candidates(db, "mail"))
    # ... and the bound name keeps working while the claim differs (a renamed machine).
    assert resolve_host("db-1.prod.example.org", await host_candidates(db, "db-1.prod.example.org")).name == "db-1"


async def test_the_embedded_local_agent_answers_only_to_its_name(db: Database) -> None:
    local = await register_agent(
        db, name="teleops-local", hostname="box-1", version="1", labels={"host": "box"},
        allowlist_digest="", now=NOW, bind=False,
    )  # fmt: skip
    assert (local.bound_hostname, local.bound_host, local.claim_conflict) == (None, None, None)
    real = await register_agent(
        db, name="box-agent", hostname="box-1", version="1", labels={}, allowlist_digest="", now=NOW
    )
    assert real.bound_hostname == "box-1"
    assert resolve_host("box-1", await host_candidates(db, "box-1")).name == "box-agent"
