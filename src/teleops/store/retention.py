"""Retention: raw alert payloads do not grow without bound, and nothing scenario memory needs is lost.

What is pruned: rows of ``alerts`` (every fired/updated/resolved report a sender made, with its raw payload) older
than the cutoff, of incidents resolved before the cutoff — except each incident's first and last report, which
stay: the incident keeps how it started and how it ended. Nothing in the application reads the middle reports back
(the incident row holds the deduplicated state, its count and timestamps).

What is never pruned: incidents (scenario memory looks back over them, and an incident is one small row), their
timeline, the commands run for them and their output (the "last time" block is built from those), the audit
log (its hash chain must stay whole; a pruning run appends its own ``retention.pruned`` record instead).

Deletes run in batches of ``BATCH`` rows, one short transaction each, so ingest and commands wait at most one
batch behind them. With several replicas pruning is a singleton ("housekeeping"): given its `lease`, every batch
and the audit record check it in their own transaction (store/leases.py), so a replica that lost it deletes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from teleops.store.audit import append
from teleops.store.database import Database
from teleops.store.leases import Lease, fence
from teleops.store.schema import alerts, incidents

__all__ = ["BATCH", "PruneResult", "prune_raw_alerts"]

BATCH = 1000


@dataclass(frozen=True, slots=True)
class PruneResult:
    alerts_deleted: int
    batches: int
    cutoff: datetime


def _one_batch(conn: Connection, cutoff: datetime, limit: int, lease: Lease | None) -> int:
    if lease is not None:
        fence(conn, lease)  # raises LeaseLost: nothing is deleted
    first = aliased(alerts)
    last = aliased(alerts)
    newest = select(func.max(last.c.id)).where(last.c.incident_id == alerts.c.incident_id).scalar_subquery()
    oldest = select(func.min(first.c.id)).where(first.c.incident_id == alerts.c.incident_id).scalar_subquery()
    victims = (
        select(alerts.c.id)
        .join(incidents, incidents.c.id == alerts.c.incident_id)
        .where(
            alerts.c.received_at < cutoff,
            incidents.c.resolved_at.is_not(None),
            incidents.c.resolved_at < cutoff,
            alerts.c.id > oldest,
            alerts.c.id < newest,
        )
        .limit(limit)
    )
    ids = [row[0] for row in conn.execute(victims)]
    if ids:
        conn.execute(delete(alerts).where(alerts.c.id.in_(ids)))
    return len(ids)


async def prune_raw_alerts(
    db: Database, *, cutoff: datetime, now: datetime, limit: int = BATCH, lease: Lease | None = None
) -> PruneResult:
    """Delete the middle reports of incidents resolved before ``cutoff`` that arrived before it, batch by batch;
    audit the run when it deleted anything. Raises StorageUnavailable, and LeaseLost when `lease` is given and no
    longer held (the batches deleted before it stay deleted, without the run's audit record)."""
    total = batches = 0
    while True:
        deleted = await db.run_in_transaction(_one_batch, cutoff, limit, lease)
        total += deleted
        batches += 1
        if deleted < limit:
            break
    if total:
        data = {"alerts_deleted": total, "cutoff": cutoff.isoformat(), "kept": "first and last report per incident"}

        def audit(conn: Connection) -> None:
            if lease is not None:
                fence(conn, lease)
            append(conn, at=now, actor="teleops", action="retention.pruned", subject="alerts", data=data)

        await db.run_in_transaction(audit)
    return PruneResult(total, batches, cutoff)
