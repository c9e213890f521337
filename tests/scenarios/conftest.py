"""Scenario fixtures: the in-process app configured for Telegram against a fake Bot API on loopback."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from teleops.config import Settings
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.settings import settings_with

ALERT_CHAT = -100
ALICE_ID = 1001
FIRING = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures/firing.json"


@pytest.fixture
def clock() -> FakeClock:
    # Telegram dates are real Unix times, so the controller's clock starts at the real now.
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def chat_overrides() -> dict[str, Any]:
    """Extra `telegram:` keys for one test (override this fixture in a module)."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, chat_overrides: dict[str, Any]) -> Settings:
    telegram: dict[str, Any] = {
        "token": fake_telegram.token,
        "base_url": fake_telegram.base_url,
        "allowed_chats": [ALERT_CHAT],
        "alert_chats": [ALERT_CHAT],
        "poll_timeout": "1s",
        **chat_overrides,
    }
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram=telegram,
        users=[{"name": "alice", "role": "operator", "telegram_id": ALICE_ID}],
        twofactor={"web_signin": "enrolled"},  # chat scenarios: the console's admin logs in with a password
    )


def alert_body(name: str = "DiskFull", fingerprint: str = "3f1da6df5736301a", **labels: str) -> bytes:
    body = json.loads(FIRING.read_text())
    alert = copy.deepcopy(body["alerts"][0])
    alert["labels"] = {**alert["labels"], "alertname": name, **labels}
    alert["fingerprint"] = fingerprint
    body["alerts"] = [alert]
    return json.dumps(body).encode()


async def eventually(condition: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `condition` (sync or async) until truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
