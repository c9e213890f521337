"""The incident-events object (store/incident_events.py) on a real controller: its phases run in order, inside the
transaction or after it as they promise, and a subscriber that fails inside the transaction undoes the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Connection

from teleops.domain.incident import IncidentAction
from teleops.store.incident_events import IncidentEvents
from teleops.store.incidents import act_on_incident, get_incident
from teleops.store.ingest_batch import IncidentChange
from teleops.store.schema import incidents
from tests.conftest import Api


async def fire(api: Api, check: str) -> int:
    body = {"check": check, "host": "web-1", "severity": "critical", "summary": f"{check} is failing"}
    response = await api.client.post("/api/v1/alerts/generic", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def test_alert_phases_run_in_order_and_the_first_sees_the_uncommitted_incident(api: Api) -> None:
    heard: list[tuple[str, object]] = []

    def in_transaction(conn: Connection, changes: Sequence[IncidentChange], now: datetime) -> None:
        # The incident row is there for this connection: the same transaction that wrote it.
        ids = [c.incident_id for c in changes]
        rows = conn.execute(select(incidents.c.id).where(incidents.c.id.in_(ids))).all()
        heard.append(("in_transaction", sorted(r.id for r in rows)))

    api.services.incident_events.on_alerts(
        in_transaction=in_transaction,
        committed=lambda changes: heard.append(("committed", [c.incident_id for c in changes])),
        durable=lambda changes: heard.append(("durable", [c.incident_id for c in changes])),
    )
    incident = await fire(api, "EventsOrder")
    assert heard == [("in_transaction", [incident]), ("committed", [incident]), ("durable", [incident])]


async def test_a_failing_action_subscriber_undoes_the_action_and_committed_runs_only_on_a_change(api: Api) -> None:
    incident = await fire(api, "EventsRollback")
    events = IncidentEvents()
    committed: list[str] = []
    events.on_action(committed=lambda: committed.append("woken"))
    now = api.services.clock()

    def refuse(*_args: object) -> None:
        raise RuntimeError("a subscriber failed")

    failing = IncidentEvents()
    failing.on_action(in_transaction=refuse, committed=lambda: committed.append("must not run"))
    with pytest.raises(RuntimeError, match="a subscriber failed"):
        await act_on_incident(api.services.db, incident, IncidentAction.ACK, actor="alice", now=now, events=failing)
    assert (await get_incident(api.services.db, incident)).status == "open", "the ack was rolled back"
    assert committed == []

    await act_on_incident(api.services.db, incident, IncidentAction.ACK, actor="alice", now=now, events=events)
    await act_on_incident(api.services.db, incident, IncidentAction.ACK, actor="alice", now=now, events=events)
    assert committed == ["woken"], "acking an acked incident changes nothing and wakes nobody"
