"""/oncall and /handover in chat, through the real conversation and the fake Bot API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teleops.config import Settings
from tests.conftest import Api
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, alert_body, eventually
from tests.settings import settings_with


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
        users=[
            {"name": "alice", "role": "operator", "telegram_id": ALICE_ID},
            {"name": "bob", "role": "operator"},
        ],
        oncall={
            "rotations": [{"name": "primary", "members": ["alice", "bob"], "shift": "1d", "handoff": "09:00"}],
            "escalation": [{"after": "0m", "notify": "rotation:primary"}],
        },
    )


def texts(fake: FakeTelegram) -> list[str]:
    return [m.text for m in fake.chat_messages(ALERT_CHAT)]


async def ask(fake: FakeTelegram, text: str) -> str:
    before = len(texts(fake))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, text))
    answers: list[Any] = await eventually(lambda: texts(fake)[before:], what=f"the answer to {text}")
    return str(answers[0])


async def test_oncall_names_who_is_on_call_now_and_next(api: Api, fake_telegram: FakeTelegram) -> None:
    answer = await ask(fake_telegram, "/oncall")
    assert "primary:" in answer
    assert "alice" in answer
    assert "bob" in answer
    assert "until" in answer


async def test_handover_digest_lists_open_incidents(api: Api, fake_telegram: FakeTelegram) -> None:
    response = await api.client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=api.ingest_headers)
    assert response.status_code == 200
    await eventually(lambda: any("DiskFull" in t for t in texts(fake_telegram)), what="the alert message")
    answer = await ask(fake_telegram, "/handover")
    assert "Handover" in answer
    assert "DiskFull on web-1" in answer
    assert "nothing tried yet" in answer
