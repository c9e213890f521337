"""Self-monitoring (issue #20.4): the external dead-man's switch hears from TeleOps only while its pipeline is
healthy, and the scheduled self-test reports, per step, what is broken.

The switch is a real HTTP server on loopback (tests/integration/ping_receiver.py). The SIGSTOP test stops a real
`teleops serve` process; the storage test fills a real tmpfs under the SQLite database; the platform tests revoke the
bot token on the fake Telegram and Slack APIs, which the real client libraries talk to over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.database import MIN_FREE_BYTES
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integration.ping_receiver import PingReceiver
from tests.integration.servers import TeleopsServer, eventually
from tests.integration.test_storage_readiness import fill, small_disk  # noqa: F401  (fixture)
from tests.scenarios.conftest import eventually as eventually_async
from tests.settings import settings_with

INTERVAL_S = 1.0
SLACK_S = 1.0  # a ping already on its way when the process stopped, plus scheduling noise


@pytest.fixture
def switch() -> Iterator[PingReceiver]:
    with PingReceiver() as receiver:
        yield receiver


def test_a_stopped_controller_stops_pinging_within_one_interval_and_resumes_when_continued(
    teleops_server: Any, switch: PingReceiver
) -> None:
    server: TeleopsServer = teleops_server(
        config={"self_check": {"ping_url": switch.url("/ping/c0ffee"), "ping_every": "1s", "self_test_every": "1s"}}
    )
    eventually(lambda: len(switch.pings("/ping/c0ffee")) >= 3, what="three pings from the healthy controller")
    assert {p.method for p in switch.pings()} == {"GET"}

    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        time.sleep(3 * INTERVAL_S)
        late = [p for p in switch.pings() if p.at > stopped_at + INTERVAL_S + SLACK_S]
        assert late == [], "pings kept arriving while the controller was stopped"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    continued_at = time.monotonic()
    eventually(
        lambda: [p for p in switch.pings("/ping/c0ffee") if p.at > continued_at],
        what="pings again after SIGCONT",
        timeout=15,
    )
    body = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert body["status"] == "ready"
    assert body["self_test"]["status"] == "ok"
    assert server.metric("teleops_deadman_pings_total", result="ok") >= 4


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[httpx.AsyncClient, Services, str]]:
    """The controller's app with its lifespan (self-test and pinger included), driven in-process."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        await services.users.ensure("alice", "admin", now=clock())
        token = await services.tokens.create(TokenKind.API, "alice-cli", now=clock(), user_name="alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
            yield client, services, token


async def test_storage_that_cannot_be_written_sends_the_reason_to_fail_url_instead_of_pinging(
    small_disk: Path,  # noqa: F811
    tmp_path: Path,
    clock: FakeClock,
    switch: PingReceiver,
) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{small_disk}/teleops.db"},
        local_agent={"enabled": False},
        self_check={
            "ping_url": switch.url("/ping/c0ffee"),
            "fail_url": switch.url("/ping/c0ffee/fail"),
            "ping_every": "1s",
            "self_test_every": "1s",
        },
    )
    async with running(settings, clock) as (client, _services, _token):
        await eventually_async(lambda: switch.pings("/ping/c0ffee"), what="an ok ping", timeout=20)
        fill(small_disk, leave_bytes=MIN_FREE_BYTES // 2)
        full_at = time.monotonic()
        first = await eventually_async(lambda: switch.pings("/ping/c0ffee/fail"), what="a fail ping", timeout=20)
        assert first[0].method == "POST"
        assert first[0].body.startswith(f"storage: the disk holding {small_disk}/teleops.db has ")
        assert "free disk space" in first[0].body
        failing_since = first[0].at
        await eventually_async(lambda: len(switch.pings("/ping/c0ffee/fail")) >= 3, what="more fail pings")
        # Once it knew, it never said ok: the ok pings after the fill are at most the one already on its way.
        oks_after = [p for p in switch.pings("/ping/c0ffee") if p.at > full_at]
        assert all(p.at < failing_since for p in oks_after)
        readyz = await client.get("/readyz")
        assert readyz.status_code == 503  # /readyz already said so (issue #18.6); the switch now hears it too

        (small_disk / "ballast").unlink()
        freed_at = time.monotonic()
        await eventually_async(
            lambda: [p for p in switch.pings("/ping/c0ffee") if p.at > freed_at], what="ok pings again", timeout=20
        )


def telegram_settings(tmp_path: Path, fake: FakeTelegram) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": False},
        telegram={"token": fake.token, "base_url": fake.base_url, "poll_timeout": "1s", "alert_chats": [-1001]},
        self_check={"self_test_every": "1s"},
    )


async def self_test_of(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/readyz")
    assert answer.status_code == 200, answer.text  # a platform never makes /readyz fail
    detail: dict[str, Any] = answer.json()["self_test"]
    return detail


async def self_test_incidents(client: httpx.AsyncClient, token: str, status: str) -> list[dict[str, Any]]:
    answer = await client.get(
        "/api/v1/incidents", params={"status": status}, headers={"Authorization": f"Bearer {token}"}
    )
    items: list[dict[str, Any]] = answer.json()["items"]
    return [i for i in items if i["source"] == "teleops" and i["name"] == "TeleOpsSelfTestFailing"]


async def test_a_revoked_telegram_token_fails_the_telegram_step_and_opens_then_resolves_an_incident(
    tmp_path: Path, clock: FakeClock, fake_telegram: FakeTelegram
) -> None:
    async with running(telegram_settings(tmp_path, fake_telegram), clock) as (client, _services, token):

        async def passed() -> dict[str, Any] | None:
            found = await self_test_of(client)
            return found if found["status"] == "ok" else None

        detail = await eventually_async(passed, what="a passing self-test", timeout=20)
        assert detail["steps"] == {"storage": "ok", "ingest": "ok", "outbox": "ok", "console": "ok", "telegram": "ok"}
        assert await self_test_incidents(client, token, "open") == []  # the probe alert never opens one

        old = fake_telegram.revoke_token()

        async def failed_twice() -> dict[str, Any] | None:
            found = await self_test_of(client)
            return found if found["status"] == "failed" and found["failed_runs"] >= 2 else None

        detail = await eventually_async(failed_twice, what="the telegram step failing twice", timeout=20)
        assert detail["steps"]["telegram"].startswith("getMe failed: InvalidToken")
        assert "check telegram.token" in detail["steps"]["telegram"]
        assert {k: v for k, v in detail["steps"].items() if k != "telegram"} == {
            "storage": "ok",
            "ingest": "ok",
            "outbox": "ok",
            "console": "ok",
        }
        opened = await eventually_async(
            lambda: self_test_incidents(client, token, "open"), what="the self-test incident", timeout=10
        )
        assert "telegram" in opened[0]["summary"]
        metrics = (await client.get("/metrics")).text
        assert 'teleops_self_test_failures_total{step="telegram"}' in metrics
        assert "teleops_self_test_ok 0.0" in metrics

        fake_telegram.token = old
        await eventually_async(passed, what="the self-test passing again", timeout=20)
        await eventually_async(
            lambda: self_test_incidents(client, token, "resolved"), what="the incident resolved", timeout=10
        )
        assert await self_test_incidents(client, token, "open") == []


async def test_a_revoked_slack_token_fails_the_slack_step_in_readyz(
    tmp_path: Path, clock: FakeClock, fake_slack: FakeSlack
) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{tmp_path}/teleops.db"},
        local_agent={"enabled": False},
        slack={
            "mode": "events",
            "bot_token": fake_slack.bot_token,
            "signing_secret": "s3cr3t",
            "base_url": fake_slack.base_url,
            "alert_channels": ["C0ALERT"],
        },
        self_check={"self_test_every": "1s"},
    )
    async with running(settings, clock) as (client, _services, _token):

        async def slack_step(expected: str) -> str | None:
            steps = (await self_test_of(client)).get("steps", {})
            step = steps.get("slack")
            return step if step is not None and step.startswith(expected) else None

        await eventually_async(lambda: slack_step("ok"), what="the slack step passing", timeout=20)
        fake_slack.revoke_bot_token()
        step = await eventually_async(lambda: slack_step("auth.test failed"), what="the slack step failing", timeout=20)
        assert "invalid_auth" in step
        assert "check slack.bot_token" in step
        detail = await self_test_of(client)
        assert detail["status"] == "failed"
        assert detail["steps"]["console"] == "ok"
