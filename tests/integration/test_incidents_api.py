"""Alerts become incidents through the HTTP API; people act on them. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.conftest import Api, FakeClock

FIXTURES = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures"


def fixture(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return body


async def post_am(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.client.post("/api/v1/alerts/alertmanager", json=body, headers=api.ingest_headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def incident(api: Api, incident_id: int) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def kinds(detail: dict[str, Any]) -> list[str]:
    return [event["kind"] for event in detail["timeline"]]


async def test_a_firing_alert_opens_an_incident_with_its_host(api: Api) -> None:
    result = await post_am(api, fixture("firing"))
    assert result["results"] == [{"incident_id": 1, "outcome": "created"}]
    detail = await incident(api, 1)
    assert detail["status"] == "open"
    assert detail["name"] == "DiskFull"
    assert detail["host"] == "web-1"
    assert detail["severity"] == "critical"
    assert detail["summary"] == "Disk / is 97% full on web-1"
    assert detail["annotations"]["runbook_url"] == "https://runbooks.example.org/DiskFull"
    assert kinds(detail) == ["alert.fired"]


async def test_the_same_delivery_twice_is_one_incident_and_one_event(api: Api, clock: FakeClock) -> None:
    await post_am(api, fixture("firing"))
    clock.advance(minutes=5)
    second = await post_am(api, fixture("firing"))
    assert second["results"] == [{"incident_id": 1, "outcome": "duplicate"}]
    detail = await incident(api, 1)
    assert detail["count"] == 2
    assert detail["last_seen_at"].startswith("2026-11-25T09:05")
    assert kinds(detail) == ["alert.fired"]
    listing = (await api.client.get("/api/v1/incidents", headers=api.api_headers)).json()
    assert len(listing["items"]) == 1


async def test_a_changed_summary_is_an_update_on_the_timeline(api: Api) -> None:
    await post_am(api, fixture("firing"))
    body = fixture("firing")
    body["alerts"][0]["annotations"]["summary"] = "Disk / is 99% full on web-1"
    result = await post_am(api, body)
    assert result["results"][0]["outcome"] == "updated"
    detail = await incident(api, 1)
    assert detail["summary"] == "Disk / is 99% full on web-1"
    assert kinds(detail) == ["alert.fired", "alert.updated"]


async def test_resolved_alert_resolves_the_incident(api: Api) -> None:
    await post_am(api, fixture("firing"))
    result = await post_am(api, fixture("resolved"))
    assert result["results"] == [{"incident_id": 1, "outcome": "resolved"}]
    detail = await incident(api, 1)
    assert detail["status"] == "resolved"
    assert detail["resolved_by"] == "source:alertmanager"
    assert kinds(detail) == ["alert.fired", "alert.resolved"]
    again = await post_am(api, fixture("resolved"))
    assert again["results"] == [{"incident_id": None, "outcome": "ignored"}]


async def test_firing_after_resolution_is_a_new_incident_linked_to_the_last(api: Api) -> None:
    await post_am(api, fixture("firing"))
    await post_am(api, fixture("resolved"))
    body = fixture("firing")
    body["alerts"][0]["startsAt"] = "2026-11-25T10:00:00Z"
    result = await post_am(api, body)
    assert result["results"] == [{"incident_id": 2, "outcome": "created"}]
    detail = await incident(api, 2)
    assert detail["predecessor_id"] == 1
    assert detail["timeline"][0]["data"]["predecessor_id"] == 1


async def test_a_late_copy_of_a_resolved_occurrence_does_not_reopen_it(api: Api) -> None:
    # The second peer of an Alertmanager HA pair may deliver "firing" after we stored "resolved".
    await post_am(api, fixture("firing"))
    await post_am(api, fixture("resolved"))
    result = await post_am(api, fixture("firing"))
    assert result["results"] == [{"incident_id": 1, "outcome": "duplicate"}]
    listing = (await api.client.get("/api/v1/incidents?status=open", headers=api.api_headers)).json()
    assert listing["items"] == []


async def test_a_grouped_notification_opens_one_incident_per_alert(api: Api) -> None:
    result = await post_am(api, fixture("grouped_two_alerts"))
    assert [r["outcome"] for r in result["results"]] == ["created", "created"]
    listing = (await api.client.get("/api/v1/incidents", headers=api.api_headers)).json()
    assert {item["labels"]["path"] for item in listing["items"]} == {"/login", "/search"}
    assert {item["host"] for item in listing["items"]} == {"api-1"}


async def test_people_ack_snooze_and_resolve_with_their_name_on_the_timeline(api: Api, clock: FakeClock) -> None:
    await post_am(api, fixture("firing"))
    acked = await api.client.post("/api/v1/incidents/1/ack", headers=api.api_headers)
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "alice"
    again = await api.client.post("/api/v1/incidents/1/ack", headers=api.api_headers)
    assert again.status_code == 200  # acking twice is not an error and adds no event
    snoozed = await api.client.post("/api/v1/incidents/1/snooze", json={"duration": "30m"}, headers=api.api_headers)
    assert snoozed.status_code == 200
    assert snoozed.json()["status"] == "snoozed"
    assert snoozed.json()["snoozed_until"].startswith("2026-11-25T09:30")
    resolved = await api.client.post("/api/v1/incidents/1/resolve", headers=api.api_headers)
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["resolved_by"] == "alice"
    events = resolved.json()["timeline"]
    assert [e["kind"] for e in events] == [
        "alert.fired",
        "incident.acknowledged",
        "incident.snoozed",
        "incident.resolved",
    ]
    assert {e["actor"] for e in events[1:]} == {"alice"}
    assert events[1]["data"]["via"] == "api-token:alice-cli"


async def test_acting_on_a_resolved_incident_is_a_conflict_that_says_why(api: Api) -> None:
    await post_am(api, fixture("firing"))
    await post_am(api, fixture("resolved"))
    response = await api.client.post("/api/v1/incidents/1/ack", headers=api.api_headers)
    assert response.status_code == 409
    assert "cannot ack an incident that is resolved" in response.json()["detail"]


async def test_bad_snooze_durations_are_refused(api: Api) -> None:
    await post_am(api, fixture("firing"))
    for duration in ("forever", "0s", "90d"):
        response = await api.client.post(
            "/api/v1/incidents/1/snooze", json={"duration": duration}, headers=api.api_headers
        )
        assert response.status_code == 422, duration
    assert (await incident(api, 1))["status"] == "open"


async def test_unknown_incident_is_404(api: Api) -> None:
    response = await api.client.get("/api/v1/incidents/999", headers=api.api_headers)
    assert response.status_code == 404
    assert "does not exist" in response.json()["detail"]
    response = await api.client.post("/api/v1/incidents/999/resolve", headers=api.api_headers)
    assert response.status_code == 404


async def test_incidents_need_an_api_token(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, api.ingest_headers):
        response = await api.client.get("/api/v1/incidents", headers=headers)
        assert response.status_code == 401
        assert "teleops token create api" in response.json()["detail"]


async def test_listing_filters_by_status_and_pages(api: Api) -> None:
    for index in range(5):
        body = copy.deepcopy(fixture("firing"))
        body["alerts"][0]["fingerprint"] = f"fp-{index}"
        await post_am(api, body)
    await api.client.post("/api/v1/incidents/2/ack", headers=api.api_headers)
    acked = (await api.client.get("/api/v1/incidents?status=acknowledged", headers=api.api_headers)).json()
    assert [item["id"] for item in acked["items"]] == [2]
    page = (await api.client.get("/api/v1/incidents?limit=2", headers=api.api_headers)).json()
    assert [item["id"] for item in page["items"]] == [5, 4]
    older = await api.client.get(f"/api/v1/incidents?limit=2&before={page['next_before']}", headers=api.api_headers)
    assert [item["id"] for item in older.json()["items"]] == [3, 2]
    bad = await api.client.get("/api/v1/incidents?status=sleeping", headers=api.api_headers)
    assert bad.status_code == 422
    assert bad.json()["field"] == "query.status"


async def test_health_ready_and_metrics(api: Api) -> None:
    await post_am(api, fixture("grouped_two_alerts"))
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json()["status"] == "ready"
    metrics = (await api.client.get("/metrics")).text
    assert 'teleops_alerts_received_total{source="alertmanager",status="firing"} 2.0' in metrics
    assert "teleops_incidents_open 2.0" in metrics
    assert "teleops_http_request_duration_seconds_bucket" in metrics


async def test_docs_are_served_without_a_cdn(api: Api) -> None:
    page = (await api.client.get("/docs")).text
    assert "/static/swagger-ui/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    asset = await api.client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert asset.status_code == 200
    spec = (await api.client.get("/openapi.json")).json()
    assert "/api/v1/alerts/{source}" in spec["paths"]


async def test_pagerduty_senders_may_authenticate_with_routing_key(api: Api) -> None:
    event = {
        "routing_key": api.ingest_token,
        "event_action": "trigger",
        "dedup_key": "disk-web-1",
        "payload": {"summary": "Disk full on web-1", "source": "web-1", "severity": "critical"},
    }
    response = await api.client.post("/api/v1/alerts/pagerduty", json=event)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["outcome"] == "created"
    for wrong in ("nope", "", None):
        response = await api.client.post("/api/v1/alerts/pagerduty", json={**event, "routing_key": wrong})
        assert response.status_code == 401
    # A routing_key is not accepted by sources that do not authenticate that way.
    response = await api.client.post("/api/v1/alerts/generic", json={"summary": "x", "routing_key": api.ingest_token})
    assert response.status_code == 401
    # Unauthenticated garbage learns nothing about the body.
    response = await api.client.post("/api/v1/alerts/pagerduty", content=b"{not json")
    assert response.status_code == 401
    listing = (await api.client.get("/api/v1/incidents", headers=api.api_headers)).json()
    assert len(listing["items"]) == 1
