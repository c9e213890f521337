"""Ingest rate limits over real HTTP (issue #18 item 5, docs/threat-model.md T28).

A generic sender over its limit is answered 429 with Retry-After; the throttling opens one incident (source
`teleops`, IngestThrottled:<token>) that the normal routing pages to the admins' team, once per episode, and that
is resolved once the sender is back under its limit. The real Alertmanager, resending every group every second
(far more often than its defaults), is never throttled by the default limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.fakes.telegram import free_port
from tests.integration.servers import AlertmanagerServer, TeleopsServer, wait_until
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

ADA, BOB = 1001, 1002  # Telegram ids: ada is an admin, bob the operator on call for everything else


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": False},
        users=[{"name": "ada", "role": "admin", "telegram_id": ADA}, {"name": "bob", "telegram_id": BOB}],
        oncall={
            "rotations": [{"name": "primary", "members": ["bob"], "shift": "7d", "handoff": "Mon 09:00"}],
            "escalation": [{"after": "0m", "notify": "rotation:primary"}],
            # TeleOps' own incidents (source `teleops`) go to the admins, as docs/ingest-limits.md suggests.
            "teams": [{"name": "admins", "escalation": [{"after": "0m", "notify": "user:ada"}]}],
            "routes": [{"team": "admins", "source": ["teleops"]}],
        },
        ingest={"limits": {"generic": {"alerts": 3, "per": "1m"}, "pagerduty": {"alerts": 3, "per": "1m"}}},
    )


@dataclass
class Running:
    services: Services
    client: httpx.AsyncClient
    ingest: dict[str, str]
    api: dict[str, str]

    async def alert(self, number: int) -> httpx.Response:
        body = {"summary": f"Queue {number} is backing up", "host": "web-1", "check": f"QueueBacklog{number}"}
        return await self.client.post("/api/v1/alerts/generic", json=body, headers=self.ingest)

    async def throttle_incidents(self) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/incidents", headers=self.api)
        return [i for i in response.json()["items"] if i["source"] == "teleops"]

    async def pages(self) -> list[tuple[str, int | None]]:
        """(chat id, incident id) of every page about a throttle incident queued so far, after an escalation tick."""
        await self.services.oncall.worker.tick()
        ours = {i["id"] for i in await self.throttle_incidents()}
        rows = await self.services.chat.outbox.rows("telegram")
        return [
            (row.chat_id, row.incident_id)
            for row in sorted(rows, key=lambda r: r.id)
            if row.purpose == "page" and row.incident_id in ours
        ]

    async def all_pages(self) -> list[str]:
        return [row.chat_id for row in await self.services.chat.outbox.rows("telegram") if row.purpose == "page"]

    async def metric(self, name: str, **labels: str) -> float:
        text = (await self.client.get("/metrics")).text
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.partition("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


@pytest.fixture
async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[Running]:
    """The app under uvicorn on loopback in this event loop (the clock stays the test's)."""
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), what="the controller to listen")
        assert not task.done(), "the controller stopped during startup"
        services: Services = app.state.services
        ingest = await services.tokens.create(TokenKind.INGEST, "flood", now=clock())
        api = await services.tokens.create(TokenKind.API, "ada-cli", now=clock(), user_name="ada")
        async with httpx.AsyncClient(base_url=f"http://{settings.server.listen}", timeout=10) as client:
            yield Running(services, client, {"Authorization": f"Bearer {ingest}"}, {"Authorization": f"Bearer {api}"})
    finally:
        limits = getattr(app.state, "ingest_limits", None)
        if limits is not None:
            await limits.close()
        server.should_exit = True
        await task


async def test_a_flooding_generic_sender_gets_429_and_the_admins_are_paged_once(
    running: Running, clock: FakeClock
) -> None:
    for number in range(3):  # the burst: 3 alerts
        assert (await running.alert(number)).status_code == 200
    refused = [await running.alert(number) for number in range(3, 10)]
    assert [r.status_code for r in refused] == [429] * 7
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert "over its generic rate limit (3 alerts per 1m" in response.json()["detail"]
    assert await running.metric("teleops_ingest_throttled_total", source="generic", token="flood") == 7
    assert await running.metric("teleops_alerts_rejected_total", source="generic", code="429") == 7
    assert await running.metric("teleops_ingest_throttling", source="generic", token="flood") == 1

    # One incident for the whole episode, critical, paging the admins' team (ada), not the on-call rotation (bob).
    [incident] = await running.throttle_incidents()
    assert (incident["name"], incident["severity"], incident["status"]) == ("IngestThrottled:flood", "critical", "open")
    first = [(str(ADA), incident["id"])]
    assert await running.pages() == first
    assert sorted(await running.all_pages()) == [str(ADA), str(BOB), str(BOB), str(BOB)]  # bob: the 3 admitted
    assert [r.status_code for r in [await running.alert(number) for number in range(10, 13)]] == [429] * 3
    assert len(await running.throttle_incidents()) == 1
    assert await running.pages() == first  # paged once, however long the flood goes on

    # Back under the limit: the bucket refills over a minute, the incident is resolved and alerts are accepted.
    clock.advance(minutes=1, seconds=1)

    async def resolved() -> bool:
        return [i["status"] for i in await running.throttle_incidents()] == ["resolved"]

    await eventually(resolved, what="the throttle incident to be resolved")
    assert await running.metric("teleops_ingest_throttling", source="generic", token="flood") == 0
    assert (await running.alert(20)).status_code == 200

    # A new flood is a new episode: a new incident and a new page.
    for number in range(21, 30):
        await running.alert(number)
    second, _ = await running.throttle_incidents()
    assert (second["status"], second["id"] != incident["id"]) == ("open", True)
    assert await running.pages() == [*first, (str(ADA), second["id"])]


async def test_limits_are_per_ingest_token(running: Running, clock: FakeClock) -> None:
    for number in range(5):
        await running.alert(number)
    other = await running.services.tokens.create(TokenKind.INGEST, "quiet", now=clock())
    body = {"summary": "Disk / is 97% full", "host": "web-2", "check": "DiskFull"}
    answer = await running.client.post(
        "/api/v1/alerts/generic", json=body, headers={"Authorization": f"Bearer {other}"}
    )
    assert answer.status_code == 200  # another sender is not held back by the flooding one
    [incident] = await running.throttle_incidents()
    assert incident["name"] == "IngestThrottled:flood"


async def test_a_sender_authenticating_in_the_body_is_limited_too(running: Running, clock: FakeClock) -> None:
    # PagerDuty integrations may carry the ingest token as `routing_key`: the limit applies once it is known.
    secret = await running.services.tokens.create(TokenKind.INGEST, "pd", now=clock())

    def event(number: int) -> dict[str, Any]:
        payload = {"summary": f"Disk {number} full", "source": "web-1", "severity": "critical"}
        return {"routing_key": secret, "event_action": "trigger", "dedup_key": f"d{number}", "payload": payload}

    answers = [await running.client.post("/api/v1/alerts/pagerduty", json=event(n)) for n in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert "ingest token 'pd' is over its pagerduty rate limit" in answers[3].json()["detail"]
    [incident] = await running.throttle_incidents()
    assert incident["name"] == "IngestThrottled:pd"


# --- The real Alertmanager at (well above) its normal resend rate -----------------------------------------------

StartTeleops = Callable[..., TeleopsServer]
StartAlertmanager = Callable[..., AlertmanagerServer]


def test_alertmanager_resending_every_group_every_second_is_not_throttled_by_default(
    teleops_server: StartTeleops, alertmanager_server: StartAlertmanager
) -> None:
    teleops = teleops_server()  # the default ingest limits
    # Alertmanager's defaults resend a firing group every 5m (on change) or 4h; here every second.
    am = alertmanager_server(
        f"{teleops.url}/api/v1/alerts/alertmanager", teleops.ingest_token, group_interval="1s", repeat_interval="1s"
    )
    started = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    alerts = [
        {
            "labels": {"alertname": f"Group{group}", "instance": f"web-{host}:9100", "severity": "warning"},
            "annotations": {"summary": f"Group{group} on web-{host}"},
            "startsAt": started,
        }
        for group in range(20)
        for host in range(10)
    ]
    am.post_alerts(alerts)
    # Several rounds of every group: 200 alerts a second, 12,000 a minute.
    wait_until(
        lambda: teleops.metric("teleops_alerts_received_total", source="alertmanager") >= 5 * len(alerts),
        what="five rounds of resends",
        timeout=60,
    )
    assert teleops.metric("teleops_alerts_rejected_total", code="429") == 0
    assert teleops.metric("teleops_ingest_throttled_total") == 0
    assert am.metric("alertmanager_notifications_failed_total", integration="webhook") == 0
    assert [i for i in teleops.incidents() if i["source"] == "teleops"] == []
