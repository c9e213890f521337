"""On call end to end: the right person is paged, escalation on silence, ack stops it, restarts repeat nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.tokens import TokenKind
from tests.conftest import Api, FakeClock
from tests.integration.servers import start_teleops, stop_process, wait_until
from tests.settings import settings_with

FIXTURES = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures"

ONCALL: dict[str, Any] = {
    "rotations": [
        {"name": "primary", "members": ["alice", "bob"], "shift": "1d", "handoff": "09:00", "tz": "UTC"},
        {"name": "db", "members": ["dave"], "shift": "7d", "handoff": "Mon 09:00", "tz": "UTC"},
    ],
    "escalation": [{"after": "0m", "notify": "rotation:primary"}, {"after": "10m", "notify": "user:carol"}],
    "teams": [{"name": "database", "escalation": [{"after": "0m", "notify": "rotation:db"}]}],
    "routes": [{"team": "database", "labels": {"service": "postgres*"}}],
    "remind_acked_after": "1h",
    # No chat platform delivers in these tests (the outbox is only read): the deadline would fail every page and
    # hurry the escalation; delivery deadlines have their own tests (tests/integration/test_page_delivery.py).
    "delivery_deadline": "7d",
}
USERS = [
    {"name": "alice", "telegram_id": 1001},
    {"name": "bob", "telegram_id": 1002},
    {"name": "carol", "telegram_id": 1003},
    {"name": "dave", "telegram_id": 1004},
]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        users=USERS,
        oncall=ONCALL,
    )


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        ingest = await services.tokens.create(TokenKind.INGEST, "s", now=clock())
        token = await services.tokens.create(TokenKind.API, "a", now=clock(), user_name="alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
            yield Api(client, services, ingest, token)


def firing(**labels: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / "firing.json").read_text())
    body["alerts"][0]["labels"].update(labels)
    if labels:
        body["alerts"][0]["fingerprint"] = "fp-" + "-".join(sorted(labels.values()))
    return body


def on_alices_day(api: Api, clock: FakeClock) -> None:
    """Move the clock to 10:00 on a day when alice is the primary on call."""
    clock.now = clock.now.replace(hour=10)
    if api.services.oncall.directory.rotations["primary"].on_call(clock.now) != "alice":
        clock.advance(days=1)


async def tick(api: Api) -> None:
    await api.services.oncall.worker.tick()


async def pages(api: Api) -> list[tuple[str, str]]:
    """(chat id, purpose) of every page/reminder queued in the outbox, oldest first."""
    rows = await api.services.chat.outbox.rows("telegram")
    return [
        (row.chat_id, row.purpose or "")
        for row in sorted(rows, key=lambda r: r.id)
        if row.purpose in ("page", "reminder")
    ]


async def timeline(api: Api, incident_id: int) -> list[dict[str, Any]]:
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    events: list[dict[str, Any]] = detail["timeline"]
    return events


async def test_alert_pages_the_person_on_call_then_escalates_then_ack_stops_it(api: Api, clock: FakeClock) -> None:
    on_alices_day(api, clock)
    response = await api.client.post("/api/v1/alerts/alertmanager", json=firing(), headers=api.ingest_headers)
    incident_id = response.json()["results"][0]["incident_id"]
    await tick(api)
    assert await pages(api) == [("1001", "page")]  # t=0: alice, the primary on call
    clock.advance(minutes=9)
    await tick(api)
    assert await pages(api) == [("1001", "page")]  # nothing before 10m
    clock.advance(minutes=1)
    await tick(api)
    assert await pages(api) == [("1001", "page"), ("1003", "page")]  # t=10m: carol
    clock.advance(minutes=1)
    acked = await api.client.post(f"/api/v1/incidents/{incident_id}/ack", headers=api.api_headers)
    assert acked.status_code == 200
    await tick(api)
    clock.advance(minutes=59)
    await tick(api)
    assert len(await pages(api)) == 2  # ack at t=11m: no more steps
    clock.advance(minutes=1)
    await tick(api)
    assert await pages(api) == [("1001", "page"), ("1003", "page"), ("1001", "reminder")]  # acked by alice, 1h later
    kinds = [(e["kind"], e["data"].get("step")) for e in await timeline(api, incident_id)]
    assert ("notified", 1) in kinds
    assert ("escalated", 2) in kinds
    assert ("reminded", None) in kinds


async def test_routes_send_database_alerts_to_the_database_team(api: Api, clock: FakeClock) -> None:
    await api.client.post(
        "/api/v1/alerts/alertmanager", json=firing(service="postgres-main"), headers=api.ingest_headers
    )
    await tick(api)
    clock.advance(minutes=30)
    await tick(api)
    assert await pages(api) == [("1004", "page")]  # dave, and no escalation to carol (the team has one step)


async def test_snooze_pauses_paging_and_resolve_ends_it(api: Api, clock: FakeClock) -> None:
    on_alices_day(api, clock)
    response = await api.client.post("/api/v1/alerts/alertmanager", json=firing(), headers=api.ingest_headers)
    incident_id = response.json()["results"][0]["incident_id"]
    await tick(api)
    await api.client.post(f"/api/v1/incidents/{incident_id}/snooze", json={"duration": "30m"}, headers=api.api_headers)
    await tick(api)
    clock.advance(minutes=29)
    await tick(api)
    assert await pages(api) == [("1001", "page")]
    clock.advance(minutes=1)
    await tick(api)  # the snooze ended: open again, paging restarts with the person on call
    assert await pages(api) == [("1001", "page"), ("1001", "page")]
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    assert detail["status"] == "open"
    await api.client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=api.api_headers)
    await tick(api)
    clock.advance(hours=5)
    await tick(api)
    assert len(await pages(api)) == 2


async def test_someone_without_a_chat_is_reported_on_the_timeline(api: Api, clock: FakeClock) -> None:
    api.services.oncall.directory._configured.pop("alice")
    on_alices_day(api, clock)
    response = await api.client.post("/api/v1/alerts/alertmanager", json=firing(), headers=api.ingest_headers)
    incident_id = response.json()["results"][0]["incident_id"]
    await tick(api)
    notified = [e for e in await timeline(api, incident_id) if e["kind"] == "notified"]
    assert "alice has no chat or contact method to page" in notified[0]["data"]["problem"]
    failed = [e for e in await timeline(api, incident_id) if e["kind"] == "page.failed"]
    assert failed[0]["data"]["escalation"] == "step 2 now"  # carol is paged at once, not 10 minutes later
    await tick(api)
    assert await pages(api) == [("1003", "page")]


def test_a_restart_mid_escalation_neither_loses_nor_repeats_a_step(tmp_path: Path) -> None:
    config = {
        "users": USERS,
        "oncall": {
            "rotations": [{"name": "primary", "members": ["alice"], "shift": "1d", "handoff": "09:00"}],
            "escalation": [{"after": "0s", "notify": "rotation:primary"}, {"after": "6s", "notify": "user:carol"}],
        },
    }
    server = start_teleops(tmp_path / "ctl", config=config)
    try:
        posted = time.monotonic()  # before the POST: the server opens the incident (and starts its clock) during it
        response = httpx.post(f"{server.url}/api/v1/alerts/alertmanager", json=firing(), headers=server.ingest_headers)
        incident_id = response.json()["results"][0]["incident_id"]
        wait_until(
            lambda: any(e["kind"] == "notified" for e in server.incident(incident_id)["timeline"]),
            what="the first page",
        )
    finally:
        stop_process(server.process)  # the controller goes away between step 1 and step 2
    server = start_teleops(tmp_path / "ctl", config=config)
    try:
        wait_until(
            lambda: any(e["kind"] == "escalated" for e in server.incident(incident_id)["timeline"]),
            what="the second step after the restart",
            timeout=30,
        )
        assert time.monotonic() - posted >= 6  # not before it was due
        events = server.incident(incident_id)["timeline"]
        assert [e["data"].get("step") for e in events if e["kind"] in ("notified", "escalated")] == [1, 2]
    finally:
        stop_process(server.process)
