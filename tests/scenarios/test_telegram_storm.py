"""Alert storms: past the threshold in a window, one summary message per chat and per (route, severity), edited as
more arrive, instead of a flood (the rule of time itself: test_storm_by_time.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Api
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, alert_body, eventually
from tests.scenarios.test_telegram_flow import post_alert


@pytest.fixture
def chat_overrides() -> dict[str, object]:
    return {"storm_threshold": 3}


async def test_storm_is_grouped_into_one_summary(api: Api, fake_telegram: FakeTelegram) -> None:
    for n in range(8):
        await post_alert(api, alert_body(name="DiskFull" if n % 2 else "HighLoad", fingerprint=f"storm{n}"))
    await eventually(
        lambda: any("more new incidents" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="summary"
    )
    messages = fake_telegram.chat_messages(ALERT_CHAT)
    summaries = [m for m in messages if "more new incidents" in m.text]
    assert len(messages) - len(summaries) == 3
    assert len(summaries) == 1
    assert "+5 more" in summaries[0].text
    assert "DiskFull ×" in summaries[0].text
    assert "HighLoad ×" in summaries[0].text


async def test_a_storm_in_one_webhook_folds_into_one_summary_then_keeps_counting(
    api: Api, fake_telegram: FakeTelegram
) -> None:
    """All folded incidents of one batch are added to the summary at once; a later batch adds to the same one."""
    alerts = [json.loads(alert_body(name="DiskFull", fingerprint=f"batch{n}"))["alerts"][0] for n in range(8)]
    body = json.loads(alert_body())
    body["alerts"] = alerts
    await post_alert(api, json.dumps(body).encode())
    await post_alert(api, alert_body(name="HighLoad", fingerprint="later"))
    await eventually(
        lambda: any("+6 more" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="summary of 6"
    )
    messages = fake_telegram.chat_messages(ALERT_CHAT)
    summaries = [m for m in messages if "more new incidents" in m.text]
    assert len(messages) - len(summaries) == 3
    assert len(summaries) == 1
    assert "DiskFull ×5" in summaries[0].text
    assert "HighLoad ×1" in summaries[0].text
