"""What the incoming engineer needs at a shift change: open incidents, what was tried, what came back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from teleops.store.schema import commands, incidents, server_keys, timeline

__all__ = ["HandoverFacts", "IncidentFacts", "TriedCommand", "claim_handover", "handover_facts"]

MAX_INCIDENTS = 50
MAX_COMMANDS_EACH = 5


@dataclass(frozen=True, slots=True)
class TriedCommand:
    argv: list[str]
    host: str
    requester: str
    status: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    id: int
    name: str
    host: str | None
    severity: str
    status: str
    created_at: datetime
    acknowledged_by: str | None
    predecessor_id: int | None
    commands: list[TriedCommand] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (actor, text)


@dataclass(frozen=True, slots=True)
class HandoverFacts:
    open: list[IncidentFacts]
    recurred: list[IncidentFacts]  # opened during the shift again after an earlier resolution
    resolved_count: int  # resolved during the shift


def handover_facts(conn: Connection, *, since: datetime, now: datetime) -> HandoverFacts:
    """Facts for a digest of the shift that ran from `since` to `now` (newest incidents first)."""
    open_rows = conn.execute(
        select(incidents).where(incidents.c.resolved_at.is_(None)).order_by(incidents.c.id.desc()).limit(MAX_INCIDENTS)
    ).all()
    recurred_rows = conn.execute(
        select(incidents)
        .where(incidents.c.predecessor_id.is_not(None), incidents.c.created_at >= since, incidents.c.created_at < now)
        .order_by(incidents.c.id.desc())
        .limit(MAX_INCIDENTS)
    ).all()
    resolved = conn.execute(
        select(incidents.c.id).where(incidents.c.resolved_at >= since, incidents.c.resolved_at < now)
    ).all()
    return HandoverFacts(
        open=[_facts(conn, row._mapping) for row in open_rows],
        recurred=[_facts(conn, row._mapping) for row in recurred_rows],
        resolved_count=len(resolved),
    )


def _facts(conn: Connection, row: Any) -> IncidentFacts:
    tried = conn.execute(
        select(commands.c.argv, commands.c.host, commands.c.requester, commands.c.status, commands.c.exit_code)
        .where(commands.c.incident_id == row["id"])
        .order_by(commands.c.id.desc())
        .limit(MAX_COMMANDS_EACH)
    ).all()
    notes = conn.execute(
        select(timeline.c.actor, timeline.c.data)
        .where(timeline.c.incident_id == row["id"], timeline.c.kind == "note")
        .order_by(timeline.c.id.desc())
        .limit(MAX_COMMANDS_EACH)
    ).all()
    return IncidentFacts(
        id=row["id"],
        name=row["name"],
        host=row["host"],
        severity=row["severity"],
        status=row["status"],
        created_at=row["created_at"],
        acknowledged_by=row["acknowledged_by"],
        predecessor_id=row["predecessor_id"],
        commands=[TriedCommand(list(c.argv), c.host, c.requester, c.status, c.exit_code) for c in reversed(tried)],
        notes=[(n.actor or "?", str(dict(n.data).get("text", ""))) for n in reversed(notes)],
    )


def claim_handover(conn: Connection, rotation: str, shift_start: datetime, now: datetime) -> bool:
    """True once per (rotation, shift start): the caller sends that handover's digest in this transaction.

    The marker is a row keyed by its name (primary key), so two replicas cannot both claim it: the
    second one's commit fails and its pass is retried, finding the marker.
    """
    digest = hashlib.sha256(f"{rotation}\x00{shift_start.isoformat()}".encode()).hexdigest()[:40]
    name = f"handover:{digest}"
    if conn.execute(select(server_keys.c.name).where(server_keys.c.name == name)).first() is not None:
        return False
    conn.execute(insert(server_keys).values(name=name, value=shift_start.isoformat(), created_at=now))
    return True
