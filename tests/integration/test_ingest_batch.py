"""Several deliveries of the same alert in one webhook (one batch): the incidents a batch opens are inserted
together at its end, and what later alerts of the batch do to them still lands on the right incident.

Runs on SQLite and on PostgreSQL (the `api` fixture).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from teleops.sources.registry import SOURCES
from teleops.store.schema import alerts, incidents, timeline

if TYPE_CHECKING:
    from tests.conftest import Api

FIRING = json.loads((SOURCES[0].folder / "fixtures" / "firing.json").read_text())


def _alert(fingerprint: str, *, status: str = "firing", summary: str = "Disk / is 97% full") -> dict[str, Any]:
    alert: dict[str, Any] = copy.deepcopy(FIRING["alerts"][0])
    alert["fingerprint"] = fingerprint
    alert["labels"] = {**alert["labels"], "alertname": f"Disk-{fingerprint}"}
    alert["annotations"] = {**alert["annotations"], "summary": summary}
    alert["status"] = status
    if status == "resolved":
        alert["endsAt"] = "2026-11-25T09:13:47Z"
    return alert


async def _post(api: Api, *batch: dict[str, Any]) -> list[dict[str, Any]]:
    body = {**FIRING, "alerts": list(batch)}
    response = await api.client.post("/api/v1/alerts/alertmanager", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


async def test_one_batch_opens_counts_updates_and_resolves_the_incidents_it_opened(api: Api) -> None:
    results = await _post(
        api,
        _alert("aaa"),
        _alert("bbb"),
        _alert("aaa"),  # the same delivery again: counted
        _alert("bbb", summary="Disk / is 99% full"),  # a real change to an incident opened above
        _alert("ccc"),
        _alert("ccc", status="resolved"),  # resolved in the batch that opened it
        _alert("ddd"),
    )
    assert [r["outcome"] for r in results] == [
        "created",
        "created",
        "duplicate",
        "updated",
        "created",
        "resolved",
        "created",
    ]
    ids = [r["incident_id"] for r in results]
    assert (ids[2], ids[3], ids[5]) == (ids[0], ids[1], ids[4])
    assert len({ids[0], ids[1], ids[4], ids[6]}) == 4
    assert all(isinstance(i, int) and i > 0 for i in ids)

    async with api.services.db.engine.connect() as conn:
        stored = {
            row.id: row
            for row in await conn.execute(
                select(
                    incidents.c.id,
                    incidents.c.fingerprint,
                    incidents.c.count.label("times"),  # not `.count`: a Row is a tuple, and tuple.count is a method
                    incidents.c.status,
                    incidents.c.summary,
                )
            )
        }
        kinds = [(r.incident_id, r.kind) for r in await conn.execute(select(timeline).order_by(timeline.c.id))]
        deliveries = sorted(r.incident_id for r in await conn.execute(select(alerts.c.incident_id)))
    assert {i: stored[i].fingerprint for i in stored} == {ids[0]: "aaa", ids[1]: "bbb", ids[4]: "ccc", ids[6]: "ddd"}
    assert stored[ids[0]].times == 2
    assert (stored[ids[1]].times, stored[ids[1]].summary) == (2, "Disk / is 99% full")
    assert stored[ids[4]].status == "resolved"
    assert stored[ids[6]].status == "open"
    assert [k for k in kinds if k[0] == ids[1]] == [(ids[1], "alert.fired"), (ids[1], "alert.updated")]
    assert [k for k in kinds if k[0] == ids[4]] == [(ids[4], "alert.fired"), (ids[4], "alert.resolved")]
    # Every delivery that changed something is kept, with the stored incident id (a pure duplicate only counts).
    assert deliveries == sorted([ids[0], ids[1], ids[1], ids[4], ids[4], ids[6]])

    # The next batch finds them: the open one is counted, the resolved one is followed by a new incident.
    recurrence = {**_alert("ccc"), "startsAt": "2026-11-25T10:00:00Z"}  # a new occurrence, not a late copy
    again = await _post(api, _alert("aaa"), recurrence)
    assert again[0] == {**again[0], "outcome": "duplicate", "incident_id": ids[0]}
    assert again[1]["outcome"] == "created"
    assert again[1]["incident_id"] not in ids
