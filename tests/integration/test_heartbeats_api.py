"""Heartbeats in, over real HTTP against the app under uvicorn on loopback, with the test's clock (issue #20).

The clock is the test's, so "missed by interval + grace" and "not before one interval after a restart" are checked
at their exact boundaries, with no sleeps: the test moves the clock and runs the monitor's sweep, as the monitor's
own loop does when it wakes. Pages are the escalation worker's outbox rows (purpose `page`) for the person on call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Connection

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.heartbeats import HeartbeatMonitor
from teleops.server.services import Services
from teleops.store.audit import AuditEvent, iter_events
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.fakes.telegram import free_port
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

ADA, BOB = 1001, 1002  # Telegram ids: ada (admin) is on call, bob is an operator
AM_WEBHOOK = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures/firing.json"
BACKUP = {"name": "nightly-backup", "interval": "10m", "grace": "5m", "labels": {"team": "storage"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": False},
        users=[{"name": "ada", "role": "admin", "telegram_id": ADA}, {"name": "bob", "telegram_id": BOB}],
        oncall={
            "rotations": [{"name": "primary", "members": ["ada"], "shift": "7d", "handoff": "Mon 09:00"}],
            "escalation": [{"after": "0m", "notify": "rotation:primary"}],
        },
        heartbeats=[BACKUP],
    )


@dataclass
class Running:
    services: Services
    monitor: HeartbeatMonitor
    client: httpx.AsyncClient
    ingest_token: str
    admin: dict[str, str]  # ada's API token
    operator: dict[str, str]  # bob's API token

    @property
    def ingest(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ingest_token}"}

    async def ping(self, name: str = "nightly-backup") -> httpx.Response:
        return await self.client.post(f"/api/v1/heartbeats/{name}/ping", headers=self.ingest)

    async def heartbeat_incidents(self) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/incidents", headers=self.admin)
        return [i for i in response.json()["items"] if i["source"] == "heartbeat"]

    async def pages(self) -> list[tuple[str, int | None]]:
        """(chat id, incident id) of every page queued so far, after an escalation tick."""
        await self.services.oncall.worker.tick()
        rows = await self.services.chat.outbox.rows("telegram")
        return [(row.chat_id, row.incident_id) for row in sorted(rows, key=lambda r: r.id) if row.purpose == "page"]

    async def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in (await self.client.get("/metrics")).text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.partition("{")[0] == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total


@asynccontextmanager
async def serve(settings: Settings, clock: FakeClock) -> AsyncIterator[Running]:
    """The app under uvicorn on loopback in this event loop, until the block ends (a controller's lifetime)."""
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.server.host, port=settings.server.port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), what="the controller to listen")
        assert not task.done(), "the controller stopped during startup"
        services: Services = app.state.services
        ingest = await services.tokens.create(TokenKind.INGEST, f"cron-{id(app)}", now=clock())
        admin = await services.tokens.create(TokenKind.API, f"ada-{id(app)}", now=clock(), user_name="ada")
        operator = await services.tokens.create(TokenKind.API, f"bob-{id(app)}", now=clock(), user_name="bob")
        async with httpx.AsyncClient(base_url=f"http://{settings.server.listen}", timeout=10) as client:
            yield Running(
                services,
                app.state.heartbeats,
                client,
                ingest,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {operator}"},
            )
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[Running]:
    async with serve(settings, clock) as live:
        yield live


# --- Missed, paged, resolved -----------------------------------------------------------------------------------


async def test_a_heartbeat_missed_by_interval_plus_grace_pages_and_the_next_ping_resolves_it(
    running: Running, clock: FakeClock
) -> None:
    assert (await running.ping()).status_code == 200
    clock.advance(minutes=15)  # exactly interval + grace: due now
    clock.advance(seconds=-1)
    await running.monitor.sweep()
    assert await running.heartbeat_incidents() == []  # one second before it is due: quiet
    clock.advance(seconds=1)
    await running.monitor.sweep()
    [incident] = await running.heartbeat_incidents()
    assert (incident["name"], incident["severity"], incident["status"]) == (
        "Heartbeat nightly-backup missed",
        "critical",
        "open",
    )
    assert "last ping at 2026-11-25 09:00:00 UTC (15m ago); expected every 10m (+ 5m grace)" in incident["summary"]
    assert await running.pages() == [(str(ADA), incident["id"])]  # paged like any alert
    state = (await running.client.get("/api/v1/heartbeats/nightly-backup", headers=running.operator)).json()
    assert (state["state"], state["due_at"]) == ("late", None)
    assert await running.metric("teleops_heartbeats_late") == 1

    clock.advance(minutes=30)
    await running.monitor.sweep()
    assert len(await running.heartbeat_incidents()) == 1  # one miss, one incident
    assert await running.pages() == [(str(ADA), incident["id"])]

    back = await running.ping()
    assert back.status_code == 200
    assert back.json()["state"] == "up"
    [resolved] = await running.heartbeat_incidents()
    assert (resolved["id"], resolved["status"]) == (incident["id"], "resolved")
    assert await running.metric("teleops_heartbeats_late") == 0
    assert await running.metric("teleops_heartbeat_pings_total", heartbeat="nightly-backup") == 2


async def test_a_heartbeat_that_never_pinged_is_missed_interval_plus_grace_after_it_was_defined(
    running: Running, clock: FakeClock
) -> None:
    clock.advance(minutes=14, seconds=59)
    await running.monitor.sweep()
    assert await running.heartbeat_incidents() == []
    clock.advance(seconds=1)
    await running.monitor.sweep()
    [incident] = await running.heartbeat_incidents()
    assert "it has never pinged since it was defined at 2026-11-25 09:00:00 UTC" in incident["summary"]


# --- Restart --------------------------------------------------------------------------------------------------


async def test_a_restart_does_not_page_before_one_interval_and_pings_then_keep_it_quiet(
    settings: Settings, clock: FakeClock
) -> None:
    async with serve(settings, clock) as first:
        assert (await first.ping()).status_code == 200
        clock.advance(minutes=14)
        await first.monitor.sweep()
        assert await first.heartbeat_incidents() == []
    clock.advance(hours=2)  # the controller is down far longer than interval + grace; the job pinged into the void
    async with serve(settings, clock) as second:
        await second.monitor.sweep()
        assert await second.heartbeat_incidents() == []  # last ping 2h14m ago, but this controller just started
        clock.advance(minutes=9, seconds=59)
        await second.monitor.sweep()
        assert await second.heartbeat_incidents() == []  # not before one interval (10m) after the start
        assert (await second.ping()).status_code == 200  # the job's next run
        for _ in range(3):  # pings keep it quiet, one run every interval
            clock.advance(minutes=10)
            await second.monitor.sweep()
            assert (await second.ping()).status_code == 200
        assert await second.heartbeat_incidents() == []
        assert await second.pages() == []
        # Not vacuous: once the job really stops, the heartbeat is missed interval + grace after its last ping.
        clock.advance(minutes=15)
        await second.monitor.sweep()
        assert [i["status"] for i in await second.heartbeat_incidents()] == ["open"]


async def test_a_restart_without_pings_pages_one_interval_after_the_start(settings: Settings, clock: FakeClock) -> None:
    async with serve(settings, clock) as first:
        assert (await first.ping()).status_code == 200
    clock.advance(hours=5)
    async with serve(settings, clock) as second:
        clock.advance(minutes=10)  # start + interval: the job had a whole interval to ping this controller
        await second.monitor.sweep()
        [incident] = await second.heartbeat_incidents()
        assert "(5h 10m ago)" in incident["summary"]


# --- Pings and their credentials ------------------------------------------------------------------------------


async def test_get_and_post_pings_with_an_ingest_token_are_recorded(running: Running, clock: FakeClock) -> None:
    got = await running.client.get("/api/v1/heartbeats/nightly-backup/ping", headers=running.ingest)
    assert got.status_code == 200
    assert got.json()["last_ping_at"] == "2026-11-25T09:00:00Z"
    clock.advance(minutes=1)
    posted = await running.client.post(
        "/api/v1/heartbeats/nightly-backup/ping", content=AM_WEBHOOK.read_bytes(), headers=running.ingest
    )
    assert posted.status_code == 200  # an Alertmanager webhook's body is accepted (and ignored)
    assert posted.json()["state"] == "up"
    assert posted.json()["due_at"] == "2026-11-25T09:16:00Z"
    basic = httpx.BasicAuth("cron", running.ingest_token)
    assert (await running.client.get("/api/v1/heartbeats/nightly-backup/ping", auth=basic)).status_code == 200
    assert await running.metric("teleops_heartbeat_pings_total", heartbeat="nightly-backup") == 3


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_ping_without_a_valid_ingest_token_is_refused_and_records_nothing(
    running: Running, method: str
) -> None:
    url = "/api/v1/heartbeats/nightly-backup/ping"
    for headers in ({}, {"Authorization": "Bearer wrong"}, running.admin, running.operator):
        answer = await running.client.request(method, url, headers=headers)
        assert answer.status_code == 401, headers
        assert "teleops token create ingest NAME" in answer.json()["detail"]
    state = (await running.client.get("/api/v1/heartbeats/nightly-backup", headers=running.admin)).json()
    assert (state["state"], state["last_ping_at"]) == ("new", None)
    assert await running.metric("teleops_heartbeat_pings_total") == 0


async def test_a_ping_of_an_unknown_heartbeat_says_how_to_define_it(running: Running) -> None:
    answer = await running.ping("no-such-job")
    assert answer.status_code == 404
    assert (
        "define it under `heartbeats:` in teleops.yaml or with PUT /api/v1/heartbeats/no-such-job"
        in (answer.json()["detail"])
    )


async def test_a_large_ping_body_is_refused_before_it_is_read(running: Running) -> None:
    answer = await running.client.post(
        "/api/v1/heartbeats/nightly-backup/ping", content=b"x" * (65 * 1024), headers=running.ingest
    )
    assert answer.status_code == 413


async def test_the_opsgenie_ping_path_takes_a_geniekey_and_answers_like_opsgenie(running: Running) -> None:
    genie = {"Authorization": f"GenieKey {running.ingest_token}"}
    for method in ("GET", "POST"):
        answer = await running.client.request(method, "/v2/heartbeats/nightly-backup/ping", headers=genie)
        assert answer.status_code == 202
        body = answer.json()
        assert body["result"] == "PONG - Heartbeat received"
        assert isinstance(body["took"], float)
        assert len(body["requestId"]) == 36
    refused = await running.client.get("/v2/heartbeats/nightly-backup/ping", headers={"Authorization": "GenieKey x"})
    assert refused.status_code == 401
    assert "GenieKey TOKEN" in refused.json()["message"]
    unknown = await running.client.get("/v2/heartbeats/other-job/ping", headers=genie)
    assert unknown.status_code == 404
    assert "no heartbeat named 'other-job'" in unknown.json()["message"]
    assert await running.metric("teleops_heartbeat_pings_total", heartbeat="nightly-backup") == 2


# --- Defining heartbeats through the API ----------------------------------------------------------------------


async def test_an_admin_defines_lists_and_deletes_a_heartbeat(running: Running, clock: FakeClock) -> None:
    spec = {"interval": "1h", "grace": "10m", "severity": "warning", "labels": {"team": "db"}, "description": "pg dump"}
    created = await running.client.put("/api/v1/heartbeats/pg-dump", json=spec, headers=running.admin)
    assert created.status_code == 201, created.text
    assert (created.json()["origin"], created.json()["state"], created.json()["due_at"]) == (
        "api",
        "new",
        "2026-11-25T10:10:00Z",
    )
    again = await running.client.put("/api/v1/heartbeats/pg-dump", json={**spec, "grace": "20m"}, headers=running.admin)
    assert (again.status_code, again.json()["grace"]) == (200, "20m")

    listed = (await running.client.get("/api/v1/heartbeats", headers=running.operator)).json()["items"]
    assert [(h["name"], h["origin"], h["state"]) for h in listed] == [
        ("nightly-backup", "config", "new"),
        ("pg-dump", "api", "new"),
    ]
    assert (await running.ping("pg-dump")).status_code == 200

    # Missed: a warning incident with the heartbeat's labels, which routes can match.
    clock.advance(hours=1, minutes=20)
    await running.monitor.sweep()
    incidents = {i["name"]: i for i in await running.heartbeat_incidents()}
    missed = incidents["Heartbeat pg-dump missed"]
    assert missed["severity"] == "warning"
    detail = (await running.client.get(f"/api/v1/incidents/{missed['id']}", headers=running.admin)).json()
    assert detail["labels"]["team"] == "db"
    assert detail["labels"]["heartbeat"] == "pg-dump"

    deleted = await running.client.delete("/api/v1/heartbeats/pg-dump", headers=running.admin)
    assert deleted.status_code == 204
    assert (await running.client.get("/api/v1/heartbeats/pg-dump", headers=running.admin)).status_code == 404
    assert (await running.ping("pg-dump")).status_code == 404
    statuses = {i["name"]: i["status"] for i in await running.heartbeat_incidents()}
    assert statuses["Heartbeat pg-dump missed"] == "resolved"  # a deleted heartbeat leaves no incident open
    actions = [event.action for event in await _audit(running)]
    assert actions.count("heartbeat.defined") == 2
    assert actions.count("heartbeat.deleted") == 1


async def test_a_config_heartbeat_cannot_be_changed_or_deleted_through_the_api(running: Running) -> None:
    changed = await running.client.put(
        "/api/v1/heartbeats/nightly-backup", json={"interval": "1m"}, headers=running.admin
    )
    deleted = await running.client.delete("/api/v1/heartbeats/nightly-backup", headers=running.admin)
    for answer in (changed, deleted):
        assert answer.status_code == 409
        assert "is defined in the config file (heartbeats:); change or remove it there" in answer.json()["detail"]
    state = (await running.client.get("/api/v1/heartbeats/nightly-backup", headers=running.admin)).json()
    assert state["interval"] == "10m"


async def test_only_an_admin_defines_heartbeats_and_bad_bodies_change_nothing(running: Running) -> None:
    refused = await running.client.put("/api/v1/heartbeats/job", json={"interval": "5m"}, headers=running.operator)
    assert refused.status_code == 403
    assert "only an admin may define or delete heartbeats" in refused.json()["detail"]
    for body in ({"interval": "soon"}, {"interval": "5m", "severity": "loud"}, {"interval": "5m", "x": 1}, {}):
        bad = await running.client.put("/api/v1/heartbeats/job", json=body, headers=running.admin)
        assert bad.status_code == 422, body
    bad_name = await running.client.put("/api/v1/heartbeats/bad%20name", json={"interval": "5m"}, headers=running.admin)
    assert bad_name.status_code == 422
    names = [h["name"] for h in (await running.client.get("/api/v1/heartbeats", headers=running.admin)).json()["items"]]
    assert names == ["nightly-backup"]


async def test_a_heartbeat_removed_from_the_config_while_late_has_its_incident_resolved(
    settings: Settings, clock: FakeClock
) -> None:
    async with serve(settings, clock) as first:
        clock.advance(minutes=15)
        await first.monitor.sweep()
        assert [i["status"] for i in await first.heartbeat_incidents()] == ["open"]
    without = settings.model_copy(update={"heartbeats": []})
    async with serve(without, clock) as second:
        assert [i["status"] for i in await second.heartbeat_incidents()] == ["resolved"]
        assert (await second.client.get("/api/v1/heartbeats", headers=second.admin)).json()["items"] == []


async def _audit(running: Running) -> list[AuditEvent]:
    def read(conn: Connection) -> list[AuditEvent]:
        return list(iter_events(conn))

    return await running.services.db.run_in_transaction(read)
