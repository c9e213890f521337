"""Pages as deliveries with a deadline on Slack (issue #20.1): the mirror of test_page_delivery.py.

carol is paged first, in her Slack DM; alice is the second step, on Telegram, ten minutes later. When Slack does not
take carol's page (the bot token revoked, the conversation archived, or nothing accepted for longer than the
deadline), the page fails with its reason on the timeline and alice is paged at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teleops.config import Settings
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

ALICE_TG = 1001
CAROL_SLACK = "U0CAROL"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={"token": fake_telegram.token, "base_url": fake_telegram.base_url, "poll_timeout": "1s"},
        slack={
            "mode": "socket",
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "team_id": "T1",
        },
        users=[
            {"name": "carol", "role": "operator", "slack_id": f"T1/{CAROL_SLACK}"},
            {"name": "alice", "role": "admin", "telegram_id": ALICE_TG},
        ],
        oncall={
            "escalation": [{"after": "0m", "notify": "user:carol"}, {"after": "10m", "notify": "user:alice"}],
            "delivery_deadline": "1m",
        },
    )


async def fire(api: Api) -> int:
    headers = {**api.ingest_headers, "Content-Type": "application/json"}
    response = await api.client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def failed_pages(api: Api, incident_id: int) -> list[dict[str, Any]]:
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    return [e["data"] for e in detail["timeline"] if e["kind"] == "page.failed"]


def alice_paged(fake: FakeTelegram) -> bool:
    return any("DiskFull" in m.text for m in fake.chat_messages(ALICE_TG))


async def assert_alice_paged_at_once(api: Api, fake_telegram: FakeTelegram, incident_id: int, reason: str) -> None:
    failures = await eventually(lambda: failed_pages(api, incident_id), what="carol's page to fail")
    assert (failures[0]["user"], failures[0]["platform"]) == ("carol", "slack")
    assert reason in failures[0]["reason"]
    assert failures[0]["escalation"] == "step 2 now"
    await eventually(lambda: alice_paged(fake_telegram), what="alice's page on Telegram")


async def test_a_revoked_slack_token_fails_the_page_at_once_and_tells_the_admin_on_telegram(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    fake_slack.revoke_bot_token()
    incident_id = await fire(api)
    await assert_alice_paged_at_once(api, fake_telegram, incident_id, "invalid_auth")
    ready = (await api.client.get("/readyz")).json()
    assert ready["delivery"] == {"slack": "token rejected"}
    await eventually(
        lambda: any("slack rejects TeleOps" in m.text for m in fake_telegram.chat_messages(ALICE_TG)),
        what="the admin (alice) told on Telegram",
    )


async def test_an_archived_conversation_fails_the_page_and_escalates(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    fake_slack.fail("chat.postMessage", status=200, error="is_archived", times=50)
    incident_id = await fire(api)
    await assert_alice_paged_at_once(api, fake_telegram, incident_id, "is_archived")


async def test_slack_accepting_nothing_fails_the_page_at_its_deadline(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    fake_slack.fail("chat.postMessage", status=503, error="service_unavailable", times=10_000)
    incident_id = await fire(api)
    await eventually(lambda: fake_slack.calls_of("chat.postMessage"), what="a first attempt")
    assert await failed_pages(api, incident_id) == []
    assert not alice_paged(fake_telegram)
    clock.advance(minutes=2)  # two minutes of Slack taking nothing
    await api.services.oncall.worker.tick()
    await assert_alice_paged_at_once(api, fake_telegram, incident_id, "not delivered within 1 min")
