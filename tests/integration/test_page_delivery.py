"""Pages are deliveries with a deadline (issue #20.1), through the real controller, the official Telegram and Slack
clients and the fake Bot API / Web API.

alice is paged first, on Telegram; carol is the escalation's second step, on Slack, ten minutes later. Whenever
Telegram does not take alice's page (her bot blocked, the token revoked, the group migrated, or nothing accepted for
longer than the deadline), the page fails with its reason on the incident's timeline and carol is paged at once,
well before her ten minutes.
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
ROOT_SLACK = "U0ROOT"
OPS_GROUP = -1002  # a Telegram group named as a shared chat (step 3)


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [OPS_GROUP],
            "poll_timeout": "1s",
        },
        slack={
            "mode": "socket",
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "team_id": "T1",
        },
        users=[
            {"name": "alice", "role": "operator", "telegram_id": ALICE_TG},
            {"name": "carol", "role": "operator", "slack_id": f"T1/{CAROL_SLACK}"},
            {"name": "root", "role": "admin", "slack_id": f"T1/{ROOT_SLACK}"},
        ],
        oncall={
            "escalation": [
                {"after": "0m", "notify": "user:alice"},
                {"after": "10m", "notify": "user:carol"},
                {"after": "20m", "notify": "chat:ops"},
            ],
            "chats": {"ops": {"platform": "telegram", "id": str(OPS_GROUP)}},
            "delivery_deadline": "1m",
        },
    )


async def fire(api: Api) -> int:
    response = await api.client.post(
        "/api/v1/alerts/alertmanager",
        content=alert_body(),
        headers={**api.ingest_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def timeline(api: Api, incident_id: int) -> list[dict[str, Any]]:
    detail = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    events: list[dict[str, Any]] = detail["timeline"]
    return events


async def failed_pages(api: Api, incident_id: int) -> list[dict[str, Any]]:
    return [e["data"] for e in await timeline(api, incident_id) if e["kind"] == "page.failed"]


def carol_paged(fake_slack: FakeSlack) -> bool:
    return any("DiskFull" in m.text or "DiskFull" in m.block_text() for m in fake_slack.channel_messages(CAROL_SLACK))


async def assert_carol_paged_at_once(api: Api, fake_slack: FakeSlack, incident_id: int, reason: str) -> None:
    """alice's page failed for `reason`; carol, step 2, is paged without the clock moving towards her 10 minutes."""
    failures = await eventually(lambda: failed_pages(api, incident_id), what="alice's page to fail")
    assert failures[0]["user"] == "alice"
    assert failures[0]["platform"] == "telegram"
    assert reason in failures[0]["reason"]
    assert failures[0]["escalation"] == "step 2 now"
    await eventually(lambda: carol_paged(fake_slack), what="carol's page on Slack")
    kinds = [e["kind"] for e in await timeline(api, incident_id)]
    assert kinds.index("page.failed") < kinds.index("escalated")
    delivered = [e["data"] for e in await timeline(api, incident_id) if e["kind"] == "page.delivered"]
    assert delivered == [] or all(d["user"] == "carol" for d in delivered)


async def test_a_page_the_platform_takes_is_delivered_and_nothing_escalates(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    incident_id = await fire(api)
    delivered = await eventually(lambda: _kind(api, incident_id, "page.delivered"), what="alice's page to be delivered")
    assert delivered[0]["user"] == "alice"
    assert fake_telegram.chat_messages(ALICE_TG)
    assert await failed_pages(api, incident_id) == []
    assert not carol_paged(fake_slack)


async def test_a_bot_blocked_by_the_person_pages_the_next_step_at_once(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    fake_telegram.fail("sendMessage", status=403, description="Forbidden: bot was blocked by the user", times=50)
    incident_id = await fire(api)
    await assert_carol_paged_at_once(api, fake_slack, incident_id, "blocked by the user")


async def test_a_group_migrated_to_a_supergroup_fails_with_the_new_id_and_escalates(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    fake_telegram.fail(
        "sendMessage",
        status=400,
        description="Bad Request: group chat was upgraded",
        times=50,
        migrate_to_chat_id=-1009876,
    )
    incident_id = await fire(api)
    await assert_carol_paged_at_once(api, fake_slack, incident_id, "supergroup with id -1009876")


async def test_a_revoked_token_is_a_health_problem_told_to_admins_elsewhere(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    fake_telegram.token = "123456:REVOKED"  # every call with the old token now answers 401 Unauthorized
    incident_id = await fire(api)
    await assert_carol_paged_at_once(api, fake_slack, incident_id, "rejects the bot token")
    ready = (await api.client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    assert ready["delivery"] == {"telegram": "token rejected"}
    assert any("telegram" in p and "token" in p for p in ready["problems"])
    metrics = (await api.client.get("/metrics")).text
    assert 'teleops_platform_token_rejected{platform="telegram"} 1.0' in metrics
    assert 'teleops_page_failures_total{cause="token_rejected",platform="telegram"}' in metrics

    def root_told() -> bool:
        return any("rejects TeleOps" in m.text + m.block_text() for m in fake_slack.channel_messages(ROOT_SLACK))

    await eventually(root_told, what="the admin told on Slack")
    # One episode, one notice: more refused pages do not tell the admin again.
    await fire_other(api)
    await eventually(lambda: len(fake_telegram.calls_of("sendMessage")) >= 2, what="a second refused page")
    assert sum("rejects TeleOps" in m.text + m.block_text() for m in fake_slack.channel_messages(ROOT_SLACK)) == 1


async def test_a_platform_that_accepts_nothing_fails_the_page_at_its_deadline(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    fake_telegram.fail("sendMessage", status=502, description="Bad Gateway", times=10_000)
    incident_id = await fire(api)
    await eventually(lambda: fake_telegram.calls_of("sendMessage"), what="a first attempt")
    assert await failed_pages(api, incident_id) == []  # retried, not failed: the deadline has not passed
    assert not carol_paged(fake_slack)
    clock.advance(seconds=61)
    await api.services.oncall.worker.tick()
    await assert_carol_paged_at_once(api, fake_slack, incident_id, "not delivered within 1 min")
    failure = (await failed_pages(api, incident_id))[0]
    assert "Bad Gateway" in failure["reason"]  # the last error the platform gave


async def test_a_shared_chat_that_refuses_is_on_the_timeline_with_nothing_further_to_escalate_to(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    incident_id = await fire(api)
    await eventually(lambda: _kind(api, incident_id, "page.delivered"), what="alice's page")
    fake_telegram.fail("sendMessage", status=403, description="Forbidden: bot was kicked from the group chat")
    clock.advance(minutes=10)
    await api.services.oncall.worker.tick()
    await eventually(lambda: carol_paged(fake_slack), what="carol at 10 minutes")
    clock.advance(minutes=10)
    await api.services.oncall.worker.tick()
    failures = await eventually(lambda: failed_pages(api, incident_id), what="the group's page to fail")
    assert failures[0]["chat"] == str(OPS_GROUP)
    assert "kicked" in failures[0]["reason"]
    assert failures[0]["escalation"] == "no later step waiting"


async def fire_other(api: Api) -> int:
    body = alert_body(name="DiskFuller", fingerprint="0a1b2c3d4e5f6071")
    response = await api.client.post(
        "/api/v1/alerts/alertmanager", content=body, headers={**api.ingest_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"])


async def _kind(api: Api, incident_id: int, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in await timeline(api, incident_id) if e["kind"] == kind]
