"""Alert storms are grouped by time, not by how fast a platform takes messages (issue #19.3).

One controller posts to Telegram, Slack and the web console at once; neither fake is rate limited, and the console
delivers every message the moment it is queued. 500 alerts arrive within ten seconds: per chat and per (route,
severity), the first `storm_threshold` are posted one by one, then ONE summary that is edited as more arrive, with
the right total. Alerts of another route or severity in the middle of the storm are posted on their own, the
escalation pages of the storm are grouped the same way, and once the window ends the next alert is posted again.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from teleops.chat.console.gateway import CONSOLE_PLATFORM, ConsoleGateway
from teleops.config import Settings
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import FIRING, eventually
from tests.settings import settings_with

ALERT_CHAT = -100  # Telegram group where new incidents are posted
PAGER_CHAT = -200  # Telegram group the escalation pages go to (oncall chat "pager")
ALERT_CHANNEL = "C0ALERT"  # Slack
THRESHOLD = 5
STORM = 500
NAMES = ("DiskFull", "HighLoad", "NodeDown")
SUMMARY = re.compile(r"\+(\d+) more new incidents")
PAGE_SUMMARY = re.compile(r"\+(\d+) more pages")
FOLDED = STORM - THRESHOLD


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_slack: FakeSlack) -> Settings:
    page = [{"after": "0m", "notify": "chat:pager"}]
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT, PAGER_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
            "storm_threshold": THRESHOLD,
            "storm_window": "1m",
        },
        slack={
            "mode": "socket",
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "alert_channels": [ALERT_CHANNEL],
            "team_id": "T1",
        },
        oncall={
            "escalation": page,
            "teams": [{"name": "payments", "escalation": page}],
            "routes": [{"team": "payments", "labels": {"team": "payments"}}],
            "chats": {"pager": {"platform": "telegram", "id": str(PAGER_CHAT)}},
        },
    )


def _alert(name: str, fingerprint: str, **labels: str) -> dict[str, Any]:
    alert = copy.deepcopy(json.loads(FIRING.read_text())["alerts"][0])
    alert["labels"] = {**alert["labels"], "alertname": name, **labels}
    alert["fingerprint"] = fingerprint
    return dict(alert)


async def _post(api: Api, alerts: list[dict[str, Any]]) -> None:
    body = json.loads(FIRING.read_text())
    body["alerts"] = alerts
    response = await api.client.post(
        "/api/v1/alerts/alertmanager",
        content=json.dumps(body).encode(),
        headers={**api.ingest_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def _total(pattern: re.Pattern[str], texts: list[str]) -> int:
    """The count of the one summary among `texts` (0 while there is none); fails if there are several."""
    totals = [int(m.group(1)) for text in texts if (m := pattern.search(text))]
    assert len(totals) <= 1, f"more than one summary: {totals}"
    return totals[0] if totals else 0


def _complete(texts: list[str], pattern: re.Pattern[str] = SUMMARY) -> bool:
    """The storm's summary counts everything folded, and the single messages are all there."""
    return _total(pattern, texts) == FOLDED and sum(not pattern.search(t) for t in texts) == THRESHOLD + 2


def _counted(text: str) -> int:
    """The sum of the "Name ×N" counts a summary shows."""
    return sum(int(n) for n in re.findall(r"×(\d+)", text))


async def _console_texts(api: Api) -> list[tuple[str, bool]]:
    gateway = api.services.chat.gateway(CONSOLE_PLATFORM)
    assert isinstance(gateway, ConsoleGateway)
    return [(str(m["text"]), bool(m["edited"])) for m in await gateway.history("admin", limit=1000)]


async def _summary_everywhere(api: Api, telegram: FakeTelegram, slack: FakeSlack) -> bool:
    texts = [
        [m.text for m in telegram.chat_messages(ALERT_CHAT)],
        [m.text for m in slack.channel_messages(ALERT_CHANNEL)],
        [text for text, _ in await _console_texts(api)],
        [m.text for m in telegram.chat_messages(PAGER_CHAT)],
    ]
    return all(_total(SUMMARY, t) or _total(PAGE_SUMMARY, t) for t in texts)


async def test_a_storm_is_grouped_by_time_on_every_platform_and_its_pages_too(
    api: Api, clock: FakeClock, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    # 500 warnings of the default route in ten seconds: 100 webhooks of 5 alerts, 0.1 s apart on the controller's
    # clock. Halfway, once every platform shows the storm's summary, a critical alert of the payments route and a
    # critical alert of the default route; the second half must then be counted by editing those summaries.
    for batch in range(STORM // 5):
        if batch == STORM // 10:
            await eventually(lambda: _summary_everywhere(api, fake_telegram, fake_slack), timeout=60, what="summaries")
            await _post(api, [_alert("PaymentsDown", "payments-critical", team="payments")])
            await _post(api, [_alert("DatabaseDown", "default-critical")])
        alerts = [_alert(NAMES[n % 3], f"storm-{n}", severity="warning") for n in range(batch * 5, batch * 5 + 5)]
        await _post(api, alerts)
        clock.advance(seconds=0.1)

    # Telegram: 5 single warnings, the two critical alerts on their own, one summary edited up to the right total.
    await eventually(
        lambda: _complete([m.text for m in fake_telegram.chat_messages(ALERT_CHAT)]),
        timeout=60,
        what="the Telegram summary to count the whole storm",
    )
    telegram = fake_telegram.chat_messages(ALERT_CHAT)
    summaries = [m for m in telegram if SUMMARY.search(m.text)]
    singles = [m for m in telegram if m not in summaries]
    assert len(summaries) == 1
    assert summaries[0].edits >= 1  # posted once, then edited as the storm went on
    assert _counted(summaries[0].text) == FOLDED
    assert "warning" in summaries[0].text.lower()
    assert len(singles) == THRESHOLD + 2
    assert sum("PaymentsDown" in m.text for m in singles) == 1
    assert sum("DatabaseDown" in m.text for m in singles) == 1

    # Slack: the same rule.
    await eventually(
        lambda: _complete([m.text for m in fake_slack.channel_messages(ALERT_CHANNEL)]),
        timeout=60,
        what="the Slack summary to count the whole storm",
    )
    slack = fake_slack.channel_messages(ALERT_CHANNEL)
    slack_summaries = [m for m in slack if SUMMARY.search(m.text)]
    assert len(slack_summaries) == 1
    assert slack_summaries[0].edits >= 1
    assert _counted(slack_summaries[0].block_text()) == FOLDED
    slack_singles = [m for m in slack if m not in slack_summaries]
    assert len(slack_singles) == THRESHOLD + 2
    assert sum("PaymentsDown" in m.text for m in slack_singles) == 1

    # The console delivers at once, never rate limited: still one summary, edited, not one "+1 more" per webhook.
    async def console_total() -> bool:
        return _complete([text for text, _ in await _console_texts(api)])

    await eventually(console_total, timeout=60, what="the console summary to count the whole storm")
    console = await _console_texts(api)
    console_summaries = [(text, edited) for text, edited in console if SUMMARY.search(text)]
    assert len(console_summaries) == 1
    assert console_summaries[0][1]  # edited in place
    assert _counted(console_summaries[0][0]) == FOLDED
    console_singles = [text for text, _ in console if not SUMMARY.search(text)]
    assert len(console_singles) == THRESHOLD + 2
    assert sum("PaymentsDown" in text for text in console_singles) == 1

    # Escalation pages: the storm's pages are grouped the same way in the pager chat; the critical ones page alone.
    await eventually(
        lambda: _complete([m.text for m in fake_telegram.chat_messages(PAGER_CHAT)], PAGE_SUMMARY),
        timeout=60,
        what="the page summary to count the whole storm",
    )
    pages = fake_telegram.chat_messages(PAGER_CHAT)
    page_summaries = [m for m in pages if PAGE_SUMMARY.search(m.text)]
    assert len(page_summaries) == 1
    assert _counted(page_summaries[0].text) == FOLDED
    single_pages = [m for m in pages if m not in page_summaries]
    assert len(single_pages) == THRESHOLD + 2
    assert all("paging" in m.text for m in single_pages)
    assert sum("PaymentsDown" in m.text for m in single_pages) == 1
    assert sum("DatabaseDown" in m.text for m in single_pages) == 1

    # The window ends: the next warning is posted on its own again, everywhere, and starts a new window.
    clock.advance(minutes=1)
    await _post(api, [_alert("DiskFull", "after-the-storm", severity="warning")])
    await eventually(
        lambda: len(fake_telegram.chat_messages(ALERT_CHAT)) == len(telegram) + 1,
        timeout=30,
        what="the alert after the window on Telegram",
    )
    await eventually(
        lambda: len(fake_slack.channel_messages(ALERT_CHANNEL)) == len(slack) + 1,
        timeout=30,
        what="the alert after the window on Slack",
    )

    async def console_grew() -> bool:
        return len(await _console_texts(api)) == len(console) + 1

    await eventually(console_grew, timeout=30, what="the alert after the window on the console")
    assert not SUMMARY.search(fake_telegram.chat_messages(ALERT_CHAT)[-1].text)
    assert "DiskFull" in fake_telegram.chat_messages(ALERT_CHAT)[-1].text
    assert _total(SUMMARY, [m.text for m in fake_telegram.chat_messages(ALERT_CHAT)]) == FOLDED  # still one summary
