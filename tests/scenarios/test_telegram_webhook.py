"""Webhook mode: only a request with exactly one correct secret header is processed (docs/threat-model.md T02)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually

SECRET = "wh-secret-0123456789"
PATH = "/api/v1/chat/telegram/webhook"


@pytest.fixture
def chat_overrides() -> dict[str, Any]:
    return {"mode": "webhook", "webhook_secret": SECRET}


async def test_secret_header_is_required_exactly_once(api: Api, fake_telegram: FakeTelegram) -> None:
    update = {"update_id": 5, **fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami")}
    header = "X-Telegram-Bot-Api-Secret-Token"
    assert (await api.client.post(PATH, json=update)).status_code == 403
    assert (await api.client.post(PATH, json=update, headers={header: "wrong"})).status_code == 403
    assert (await api.client.post(PATH, json=update, headers={header: SECRET[:-1]})).status_code == 403
    doubled = [(header, SECRET), (header, SECRET)]
    assert (await api.client.post(PATH, json=update, headers=doubled)).status_code == 403
    assert fake_telegram.chat_messages(ALERT_CHAT) == []
    assert (await api.client.post(PATH, content=b"{not json", headers={header: SECRET})).status_code == 400
    assert (await api.client.post(PATH, json=update, headers={header: SECRET})).status_code == 200
    answer = await eventually(lambda: fake_telegram.chat_messages(ALERT_CHAT), what="whoami answer")
    assert "linked to TeleOps user alice" in answer[0].text
    set_webhook = fake_telegram.calls_of("setWebhook")
    assert set_webhook
    assert set_webhook[0].params["secret_token"] == SECRET
    assert fake_telegram.calls_of("getUpdates") == []  # webhook mode never polls
