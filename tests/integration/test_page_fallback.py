"""A failed page goes to the person's next contact method (issue #20.1 and #20.2), end to end: the escalation
worker, the outbox, the official Telegram client against the fake Bot API, Apprise against a real local webhook
receiver and a real local SMTP server.

alice's contact methods, in order: Telegram, then a JSON webhook (her phone's push gateway), then email. Her bot is
blocked: the webhook gets the page at once. When the webhook is down for longer than the delivery deadline as well,
the page goes on to her email.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teleops.chat.contact import CONTACT_PLATFORM as GATEWAY_PLATFORM
from teleops.config import Settings
from teleops.oncall.delivery import CONTACT_PLATFORM
from tests.conftest import Api, FakeClock
from tests.fakes.telegram import FakeTelegram
from tests.integration.test_contact_methods import SmtpSink, Webhook, smtp, webhook  # noqa: F401 - fixtures
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

ALICE_TG = 1001


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, smtp: SmtpSink, webhook: Webhook) -> Settings:  # noqa: F811
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={"token": fake_telegram.token, "base_url": fake_telegram.base_url, "poll_timeout": "1s"},
        users=[
            {
                "name": "alice",
                "role": "operator",
                "telegram_id": ALICE_TG,
                "contacts": [{"name": "push", "url": webhook.url}, {"name": "email", "url": smtp.url}],
            },
        ],
        oncall={"escalation": [{"after": "0m", "notify": "user:alice"}], "delivery_deadline": "1m"},
    )


async def events(api: Api, incident_id: int, kind: str) -> list[dict[str, Any]]:
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    return [e["data"] for e in detail["timeline"] if e["kind"] == kind]


async def fire(api: Api) -> int:
    headers = {**api.ingest_headers, "Content-Type": "application/json"}
    response = await api.client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


def test_the_escalation_and_the_gateway_name_the_contact_platform_alike() -> None:
    assert CONTACT_PLATFORM == GATEWAY_PLATFORM


async def test_a_blocked_bot_sends_the_page_to_the_next_contact_method_at_once(
    api: Api,
    fake_telegram: FakeTelegram,
    webhook: Webhook,  # noqa: F811
    smtp: SmtpSink,  # noqa: F811
) -> None:
    fake_telegram.fail("sendMessage", status=403, description="Forbidden: bot was blocked by the user", times=50)
    incident_id = await fire(api)
    await eventually(lambda: webhook.posts, what="the page on alice's push webhook")
    post = webhook.posts[0]["json"]
    assert "DiskFull" in post["title"] + post["message"]
    assert "telegram failed" in post["message"]
    failed = (await events(api, incident_id, "page.failed"))[0]
    assert failed["platform"] == "telegram"
    assert "blocked by the user" in failed["reason"]
    assert failed["next"] == [f"{CONTACT_PLATFORM}:alice/push"]
    sent = await eventually(lambda: events(api, incident_id, "page.sent"), what="the webhook page marked sent")
    assert sent[0]["chat"] == "alice/push"
    assert smtp.messages == []  # reached: nothing more


async def test_a_contact_method_down_past_the_deadline_hands_the_page_to_the_next_one(
    api: Api,
    fake_telegram: FakeTelegram,
    webhook: Webhook,  # noqa: F811
    smtp: SmtpSink,  # noqa: F811
    clock: FakeClock,
) -> None:
    fake_telegram.fail("sendMessage", status=403, description="Forbidden: bot was blocked by the user", times=50)
    webhook.status = 503
    incident_id = await fire(api)
    await eventually(lambda: webhook.attempts >= 1, what="a first try on the webhook")
    assert smtp.messages == []
    clock.advance(seconds=61)
    await api.services.oncall.worker.tick()
    await eventually(lambda: smtp.messages, what="the page by email")
    assert "DiskFull" in str(smtp.messages[0]["Subject"])
    failures = await events(api, incident_id, "page.failed")
    assert [f["platform"] for f in failures] == ["telegram", CONTACT_PLATFORM]
    assert "not delivered within 1 min" in failures[1]["reason"]
    assert failures[1]["next"] == [f"{CONTACT_PLATFORM}:alice/email"]


async def test_a_page_that_fails_after_the_incident_was_acknowledged_pages_nobody_further(
    api: Api,
    fake_telegram: FakeTelegram,
    webhook: Webhook,  # noqa: F811
    clock: FakeClock,
) -> None:
    fake_telegram.fail("sendMessage", status=502, description="Bad Gateway", times=10_000)
    incident_id = await fire(api)
    await eventually(lambda: fake_telegram.calls_of("sendMessage"), what="a first attempt")
    acked = await api.client.post(f"/api/v1/incidents/{incident_id}/ack", headers=api.api_headers)
    assert acked.status_code == 200
    clock.advance(seconds=61)
    await api.services.oncall.worker.tick()
    failed = await eventually(lambda: events(api, incident_id, "page.failed"), what="the page past its deadline")
    assert failed[0]["next"] == "none: the incident is acknowledged"
    await api.services.oncall.worker.tick()
    assert webhook.posts == []
    assert webhook.attempts == 0
