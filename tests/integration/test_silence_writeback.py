"""Snoozing an Alertmanager incident silences it in a real Alertmanager; resolving lifts the silence."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.tokens import TokenKind
from tests.conftest import Api, FakeClock
from tests.integration.servers import AlertmanagerServer, free_port
from tests.settings import settings_with

FIXTURES = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures"


@pytest.fixture
def am(alertmanager_server: Callable[..., AlertmanagerServer]) -> AlertmanagerServer:
    # Its webhook receiver points nowhere: this test drives Alertmanager's silence API only.
    return alertmanager_server(f"http://127.0.0.1:{free_port()}/unused", "unused")


def make_api(settings: Settings, clock: FakeClock) -> Callable[[], Any]:
    async def factory() -> AsyncIterator[Api]:
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            services: Services = app.state.services
            ingest = await services.tokens.create(TokenKind.INGEST, "s", now=clock())
            await services.users.ensure("alice", "operator", now=clock())
            token = await services.tokens.create(TokenKind.API, "a", now=clock(), user_name="alice")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
                yield Api(client, services, ingest, token)

    return factory


@pytest.fixture
async def api(tmp_path: Path, am: AlertmanagerServer) -> AsyncIterator[Api]:
    # Real time here: Alertmanager refuses silences that end in its past.
    from teleops.domain.clock import system_clock

    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"},
        local_agent={"enabled": False},
        oncall={"alertmanager_url": am.url},
    )
    async for value in make_api(settings, system_clock)():  # type: ignore[arg-type]
        yield value


async def silences(am: AlertmanagerServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        found: list[dict[str, Any]] = (await client.get(f"{am.url}/api/v2/silences")).json()
    return found


async def drain(api: Api) -> None:
    assert api.services.oncall.silences is not None
    await api.services.oncall.silences.drain()


async def kinds(api: Api, incident_id: int) -> list[str]:
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    return [event["kind"] for event in detail["timeline"]]


async def test_snooze_creates_a_matching_silence_and_resolve_expires_it(api: Api, am: AlertmanagerServer) -> None:
    body = json.loads((FIXTURES / "firing.json").read_text())
    response = await api.client.post("/api/v1/alerts/alertmanager", json=body, headers=api.ingest_headers)
    incident_id = response.json()["results"][0]["incident_id"]
    snoozed = await api.client.post(
        f"/api/v1/incidents/{incident_id}/snooze", json={"duration": "2h"}, headers=api.api_headers
    )
    assert snoozed.status_code == 200
    await drain(api)
    active = [s for s in await silences(am) if s["status"]["state"] == "active"]
    assert len(active) == 1
    matchers = {m["name"]: m["value"] for m in active[0]["matchers"]}
    assert matchers == body["alerts"][0]["labels"]
    assert all(m["isEqual"] and not m["isRegex"] for m in active[0]["matchers"])
    assert active[0]["createdBy"] == "teleops"
    assert f"incident #{incident_id}" in active[0]["comment"]
    assert "alice" in active[0]["comment"]
    assert "silence.created" in await kinds(api, incident_id)

    await api.client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=api.api_headers)
    await drain(api)
    states = [s["status"]["state"] for s in await silences(am)]
    assert states == ["expired"]
    assert (await kinds(api, incident_id))[-1] == "silence.expired"


async def test_other_sources_are_not_silenced(api: Api, am: AlertmanagerServer) -> None:
    response = await api.client.post(
        "/api/v1/alerts/generic", json={"summary": "x", "host": "h", "check": "C"}, headers=api.ingest_headers
    )
    incident_id = response.json()["results"][0]["incident_id"]
    await api.client.post(f"/api/v1/incidents/{incident_id}/snooze", json={"duration": "1h"}, headers=api.api_headers)
    await drain(api)
    assert await silences(am) == []


async def test_alertmanager_down_is_reported_on_the_timeline(tmp_path: Path) -> None:
    from teleops.domain.clock import system_clock

    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"},
        local_agent={"enabled": False},
        oncall={"alertmanager_url": f"http://127.0.0.1:{free_port()}"},
    )
    async for api in make_api(settings, system_clock)():  # type: ignore[arg-type]
        body = json.loads((FIXTURES / "firing.json").read_text())
        response = await api.client.post("/api/v1/alerts/alertmanager", json=body, headers=api.ingest_headers)
        incident_id = response.json()["results"][0]["incident_id"]
        snoozed = await api.client.post(
            f"/api/v1/incidents/{incident_id}/snooze", json={"duration": "1h"}, headers=api.api_headers
        )
        assert snoozed.status_code == 200  # the snooze itself stands
        await drain(api)
        detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
        failed = [e for e in detail["timeline"] if e["kind"] == "silence.failed"]
        assert len(failed) == 1
        assert "check oncall.alertmanager_url" in failed[0]["data"]["error"]
        assert detail["status"] == "snoozed"
