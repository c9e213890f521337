"""A bug while handling a chat message still gets the person an answer (and nothing runs)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from teleops.chat.base import EventKind, InboundEvent
from tests.conftest import Api
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually


async def test_an_internal_error_is_answered_with_what_to_do(
    api: Api, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = api.services.chat.conversation

    async def broken(_event: InboundEvent) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(conversation, "_handle", broken)
    event = InboundEvent(
        platform="telegram",
        kind=EventKind.MESSAGE,
        chat_id=str(ALERT_CHAT),
        user_id=str(ALICE_ID),
        text="/incidents",
        sent_at=datetime.now(UTC),
        update_id="u-broken-1",
    )
    await conversation.handle(event)  # never raises
    answer = await eventually(
        lambda: [m for m in fake_telegram.chat_messages(ALERT_CHAT) if "failed inside TeleOps" in m.text],
        what="the failure answer",
    )
    assert "u-broken-1" in answer[0].text
    assert "nothing was run" in answer[0].text
