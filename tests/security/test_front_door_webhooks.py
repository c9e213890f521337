"""The front door on the chat webhooks (server/front_door.py), in process: a request without the platform's
credential headers is refused before its body is pulled, and a credentialed one is capped.

The body is a stream that counts how much of it the app pulled (httpx's ASGI transport hands it over only
when the app asks), so "refused before the body" is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack, sign
from tests.fakes.telegram import FakeTelegram
from tests.settings import settings_with

from teleops.config import Settings

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MiB = 1024 * 1024
TELEGRAM_SECRET = "wh-secret-0123456789"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TELEGRAM = "/api/v1/chat/telegram/webhook"
SLACK = "/api/v1/chat/slack/events"


@dataclass
class CountingBody:
    """A streamed request body that records how much of it the app pulled."""

    total: int
    chunk: int = 64 * 1024
    sent: int = field(default=0)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += self.chunk
            yield b" " * self.chunk


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "mode": "webhook",
            "webhook_secret": TELEGRAM_SECRET,
        },
        slack={
            "mode": "events",
            "bot_token": fake_slack.bot_token,
            "signing_secret": SLACK_SECRET,
            "base_url": fake_slack.base_url,
        },
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET[:-1]}],
    ids=["none", "wrong", "prefix"],
)
async def test_telegram_without_its_secret_is_refused_before_the_body(api: Api, headers: dict[str, str]) -> None:
    body = CountingBody(total=64 * MiB)
    refused = await api.client.post(TELEGRAM, content=body, headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.headers["connection"] == "close"
    assert body.sent <= body.chunk, f"{body.sent} bytes of an unauthenticated body were pulled"


async def test_telegram_with_its_secret_is_capped(api: Api) -> None:
    body = CountingBody(total=64 * MiB)
    refused = await api.client.post(
        TELEGRAM, content=body, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    )
    assert refused.status_code == 413, refused.text
    assert body.sent <= MiB + 2 * body.chunk


@pytest.mark.parametrize(
    "case", ["no headers", "stale timestamp", "future timestamp", "not v0", "short hmac", "two signatures"]
)
async def test_slack_without_fresh_signature_headers_is_refused_before_the_body(
    api: Api, clock: FakeClock, case: str
) -> None:
    now = int(clock().timestamp())
    headers: list[tuple[str, str]] = {
        "no headers": [],
        "stale timestamp": [("X-Slack-Request-Timestamp", str(now - 301)), ("X-Slack-Signature", "v0=00")],
        "future timestamp": [("X-Slack-Request-Timestamp", str(now + 301)), ("X-Slack-Signature", "v0=00")],
        "not v0": [("X-Slack-Request-Timestamp", str(now)), ("X-Slack-Signature", "v1=" + "0" * 64)],
        "short hmac": [("X-Slack-Request-Timestamp", str(now)), ("X-Slack-Signature", "v0=" + "0" * 63)],
        "two signatures": [
            ("X-Slack-Request-Timestamp", str(now)),
            ("X-Slack-Signature", "v0=00"),
            ("X-Slack-Signature", "v0=00"),
        ],
    }[case]
    body = CountingBody(total=64 * MiB)
    refused = await api.client.post(SLACK, content=body, headers=headers)
    assert refused.status_code == 401, refused.text
    assert body.sent <= body.chunk, f"{body.sent} bytes of an unsigned body were pulled"


async def test_slack_with_fresh_headers_is_read_only_up_to_its_cap(api: Api, clock: FakeClock) -> None:
    now = int(clock().timestamp())
    body = CountingBody(total=64 * MiB)
    headers = {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(SLACK_SECRET, b"{}", now)}
    refused = await api.client.post(SLACK, content=body, headers=headers)
    assert refused.status_code == 413, refused.text
    assert body.sent <= 128 * 1024 + 2 * body.chunk, f"{body.sent} bytes pulled past the 128 KiB cap"
