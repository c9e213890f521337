"""Fill a fresh TeleOps SQLite database with N open incidents fast, through the store's own schema.

The rows are what the ingest path writes for a new alert (incident, raw alert, `alert_fired` event),
built from the same parsed `Alert`s, but inserted with executemany instead of one statement at a time,
so 100k incidents take seconds instead of minutes. Only the scale benchmark (B5) uses it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from bench.alerts import webhook_body
from teleops.domain.incident import TimelineKind
from teleops.sources.alertmanager.parse import parse_alertmanager
from teleops.store.database import Database
from teleops.store.ingest_batch import alert_digest, new_incident_row
from teleops.store.schema import alerts, incidents, timeline

__all__ = ["prefill_sqlite"]

CHUNK = 5000


async def prefill_sqlite(db_path: Path, count: int, run: str) -> None:
    """Create the schema at `db_path` (migrations) and insert `count` open incidents for alerts 0..count-1."""
    url = f"sqlite+aiosqlite:///{db_path}"
    database = Database(url)
    try:
        await database.migrate()
    finally:
        await database.close()
    engine = create_engine(f"sqlite:///{db_path}")
    now = datetime.now(UTC)
    try:
        for start in range(0, count, CHUNK):
            _insert_chunk(engine, range(start, min(count, start + CHUNK)), run, now)
    finally:
        engine.dispose()


def _insert_chunk(engine: Any, indices: range, run: str, now: datetime) -> None:
    parsed = parse_alertmanager(json.loads(webhook_body(indices, run)))
    incident_rows = []
    alert_rows = []
    event_rows = []
    for index, alert in zip(indices, parsed, strict=True):
        incident_id = index + 1  # a fresh database: ids are ours to choose
        row = new_incident_row(alert, digest=alert_digest(alert), now=now, predecessor_id=None)
        incident_rows.append({"id": incident_id, **row})
        alert_rows.append(
            {"incident_id": incident_id, "status": alert.status.value, "received_at": now, "alert": alert.to_json()}
        )
        event_rows.append(
            {
                "incident_id": incident_id,
                "at": now,
                "kind": TimelineKind.ALERT_FIRED.value,
                "actor": f"source:{alert.source}",
                "data": {"summary": alert.summary, "severity": alert.severity.value, "host": alert.host},
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(incidents), incident_rows)
        conn.execute(insert(alerts), alert_rows)
        conn.execute(insert(timeline), event_rows)
