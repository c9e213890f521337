"""What the input-resilience scenarios read back from a running app: audit records, metrics, /readyz."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Connection

from teleops.store.audit import iter_events
from tests.conftest import Api

__all__ = ["metric", "readyz", "unhandled_records"]


async def unhandled_records(api: Api) -> list[dict[str, Any]]:
    """The `data` of every `chat.update_unhandled` audit event, oldest first."""

    def read(conn: Connection) -> list[dict[str, Any]]:
        return [dict(e.data) for e in iter_events(conn) if e.action == "chat.update_unhandled"]

    return await api.services.db.run_in_transaction(read)


async def metric(api: Api, name: str, **labels: str) -> float:
    """One sample of /metrics (0.0 when the series does not exist)."""
    text = (await api.client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def readyz(api: Api) -> dict[str, Any]:
    response = await api.client.get("/readyz")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
