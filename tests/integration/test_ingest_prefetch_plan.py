"""On PostgreSQL, each ingest batch finds the newest incident of its fingerprints with one index probe per
fingerprint, whatever the table's statistics say.

The statistics are stale on a fresh install, after a restore or a copy, and in the first minute of a burst
(autovacuum analyzes a table at most once a minute). With the former IN-list query the planner then read every
incident of the source from the index and filtered the fingerprints, so each batch cost more than the last
(B14 measured 1,400 → 770 alerts/s within 20 s on a fresh database). Here the statistics are made stale on
purpose: the table is analyzed while empty and autovacuum is off for it, then 3,000 incidents arrive.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from teleops.sources.registry import SOURCES
from teleops.store.ingest_batch import _PREFETCH_POSTGRESQL

if TYPE_CHECKING:
    from tests.conftest import Api

FIRING = json.loads((SOURCES[0].folder / "fixtures" / "firing.json").read_text())
INCIDENTS = 3_000
WANTED = 10


def _batch(start: int, size: int) -> dict[str, Any]:
    template = FIRING["alerts"][0]
    batch = []
    for i in range(start, start + size):
        alert = copy.deepcopy(template)
        alert["fingerprint"] = f"fp-{i:06d}"
        alert["labels"] = {**alert["labels"], "alertname": f"Disk-{i}"}
        batch.append(alert)
    return {**FIRING, "alerts": batch}


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_the_prefetch_probes_the_index_once_per_fingerprint_on_stale_statistics(api: Api) -> None:
    async with api.services.db.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE incidents SET (autovacuum_enabled = false)"))
        await conn.execute(text("ANALYZE incidents"))
    for start in range(0, INCIDENTS, 500):
        response = await api.client.post(
            "/api/v1/alerts/alertmanager", json=_batch(start, 500), headers=api.ingest_headers
        )
        assert response.status_code == 200, response.text

    fingerprints = [f"fp-{i:06d}" for i in range(0, INCIDENTS, INCIDENTS // WANTED)]
    query = _PREFETCH_POSTGRESQL.params(source="alertmanager", fingerprints=fingerprints)
    sql = str(query.compile(dialect=api.services.db.engine.dialect, compile_kwargs={"literal_binds": True}))
    async with api.services.db.engine.connect() as conn:
        found = (await conn.execute(text(sql))).all()
        explained = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar_one()

    assert sorted(row.fingerprint for row in found) == fingerprints
    nodes = _nodes(explained[0]["Plan"])
    # Every node returns at most one row per wanted fingerprint and throws none away: no scan of the source.
    assert all(node["Actual Rows"] * node["Actual Loops"] <= WANTED for node in nodes), nodes
    assert sum(node.get("Rows Removed by Filter", 0) for node in nodes) == 0, nodes
    assert any(node.get("Index Name") == "ix_incidents_source_fingerprint_id" for node in nodes), nodes
