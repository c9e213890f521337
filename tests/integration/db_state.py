"""Snapshots of the database, to prove that a refused request changed nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from teleops.store.database import Database
from teleops.store.schema import incidents, metadata

__all__ = ["INGEST_TABLES", "ingest_state", "row_counts", "settled_row_counts"]

# What an alert delivery writes in its own transaction, and what authentication could touch.
# Outbox, console messages, escalations… are also written *after* a commit by background workers
# (deliveries of earlier alerts), so only a settled database can be compared on every table.
INGEST_TABLES = ("incidents", "alerts", "timeline_events", "tokens", "users")


async def row_counts(db: Database) -> dict[str, int]:
    """Rows in every table of the schema."""
    async with db.engine.connect() as conn:
        return {
            table.name: (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in metadata.sorted_tables
        }


async def ingest_state(db: Database) -> dict[str, Any]:
    """Row counts of INGEST_TABLES plus what an update of an existing incident would move."""
    async with db.engine.connect() as conn:
        state: dict[str, Any] = {
            name: (await conn.execute(select(func.count()).select_from(metadata.tables[name]))).scalar_one()
            for name in INGEST_TABLES
        }
        totals = (
            await conn.execute(
                select(func.coalesce(func.sum(incidents.c.count), 0), func.max(incidents.c.last_seen_at))
            )
        ).one()
    state["sum(incidents.count)"] = int(totals[0])
    state["max(incidents.last_seen_at)"] = totals[1]
    return state


async def settled_row_counts(db: Database, *, quiet: float = 0.3, timeout: float = 15.0) -> dict[str, int]:
    """Row counts of every table once background work has stopped changing them for `quiet` seconds.

    Raises AssertionError when the database does not settle within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    last = await row_counts(db)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet:
        assert time.monotonic() < deadline, f"the database kept changing for {timeout}s: {last}"
        await asyncio.sleep(0.05)
        now = await row_counts(db)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last
