"""Shared fixtures: a controller app on a temporary database, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import settings as hypothesis_settings

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.tokens import TokenKind
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integration.servers import PostgresServer, postgres_server  # noqa: F401  (fixture, used by db_url)
from tests.settings import settings_with

# Property tests check what holds, not how fast: Hypothesis' default 200 ms deadline per example fails tests on a
# machine busy with the other test worker (speed is measured in bench/, never asserted in tests).
hypothesis_settings.register_profile("teleops", deadline=None)
hypothesis_settings.load_profile("teleops")


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack Web API on loopback (tests/fakes/slack.py), for tests that talk to Slack."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API on loopback (tests/fakes/telegram.py), for tests that talk to Telegram."""
    fake = FakeTelegram()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The database under test: every test using it (and `settings`, `api`) runs on SQLite and on PostgreSQL.

    PostgreSQL: the session's real server (started on first use), a fresh migrated database per test.
    Pin one backend with `@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)`.
    """
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/teleops.db"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
    )


@dataclass
class Api:
    """A running app: an httpx client bound to it, its services, and tokens to call it with."""

    client: httpx.AsyncClient
    services: Services
    ingest_token: str
    api_token: str

    @property
    def ingest_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ingest_token}"}

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        ingest = await services.tokens.create(TokenKind.INGEST, "test-sender", now=clock())
        await services.users.ensure("alice", "operator", now=clock())
        token = await services.tokens.create(TokenKind.API, "alice-cli", now=clock(), user_name="alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
            yield Api(client, services, ingest, token)


@pytest.fixture(autouse=True)
def _default_policy_after_each_test() -> Iterator[None]:
    """The controller installs its configured policy process-wide at startup (pipeline.authorize.use_policy):
    one process serves one config. Tests start many apps in one process, so each test ends by putting the
    built-in default back, and no test sees the policy another test's app installed."""
    from teleops.commands.authorize import current_policy, use_policy

    before = current_policy()
    yield
    use_policy(before)
