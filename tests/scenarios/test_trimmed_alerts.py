"""End to end (issue #19.4): an Alertmanager alert with a 5,000-character summary and 30 labels goes through the
real ingest -> notifier -> outbox -> gateway path. Telegram (python-telegram-bot) and Slack (slack-sdk, Socket
Mode) are fakes on loopback; the console is the real gateway and store. Whatever a platform cannot show is
trimmed with a marker that counts it, and the message links the incident page, which has the whole summary."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from teleops.chat.console.gateway import message_view
from teleops.config import Settings
from teleops.store.console_messages import ConsoleMessageStore
from tests.conftest import Api
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.scenarios.conftest import ALERT_CHAT, FIRING, eventually
from tests.settings import settings_with

PUBLIC_URL = "https://teleops.example"
SLACK_CHANNEL = "C0ALERT"
SUMMARY = "".join(f"{n:05d} disk / is 97% full on web-1; " for n in range(200))[:5000]
MORE = re.compile(r"… ([\d,]+) more characters")
MORE_LABELS = re.compile(r"\+(\d+) labels")


def thirty_labels(name: str = "DiskFull", host: str = "web-1") -> dict[str, str]:
    labels = {"alertname": name, "instance": f"{host}.example.internal:9100", "severity": "critical"}
    labels.update({f"label_{n:02d}": f"value {n:02d} " + "v" * 70 for n in range(27)})
    assert len(labels) == 30
    return labels


def alertmanager_body(summary: str, labels: dict[str, str], fingerprint: str) -> bytes:
    body = json.loads(FIRING.read_text())
    alert = copy.deepcopy(body["alerts"][0])
    alert["labels"] = labels
    alert["annotations"] = {**alert["annotations"], "summary": summary}
    alert["fingerprint"] = fingerprint
    body["alerts"] = [alert]
    return json.dumps(body).encode()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        server={"public_url": PUBLIC_URL + "/"},
        local_agent={"enabled": False},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
        slack={
            "mode": "socket",
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "alert_channels": [SLACK_CHANNEL],
            "team_id": "T1",
        },
    )


async def post_alert(
    api: Api, summary: str = SUMMARY, labels: dict[str, str] | None = None, fingerprint: str = "3f1da6df5736301a"
) -> int:
    response = await api.client.post(
        "/api/v1/alerts/alertmanager",
        content=alertmanager_body(summary, labels or thirty_labels(), fingerprint),
        headers={**api.ingest_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    listed = await api.client.get("/api/v1/incidents", headers=api.api_headers)
    return max(int(item["id"]) for item in listed.json()["items"])


def assert_says_what_it_cut(text: str, summary: str = SUMMARY) -> None:
    """The summary is cut with `… N more characters` where N is exactly what is missing; the labels left out are
    counted (`+N labels`) and the shown and hidden labels add up to the 30 sent."""
    cut = MORE.search(text)
    assert cut is not None, text[-400:]
    shown = text[: cut.start()].rsplit("\n", 1)[-1]
    assert summary.startswith(shown)
    assert len(shown) + int(cut.group(1).replace(",", "")) == len(summary)
    hidden = MORE_LABELS.search(text)
    assert hidden is not None
    shown_labels = [name for name in thirty_labels() if re.search(rf"\b{name}=", text)]
    assert len(shown_labels) + int(hidden.group(1)) == 30


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def telegram_visible(html: str) -> str:
    parser = _Visible()
    parser.feed(html)
    return "".join(parser.parts)


async def test_telegram_gets_the_markers_and_the_link_and_the_page_has_everything(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    incident_id = await post_alert(api)
    [message] = await eventually(lambda: fake_telegram.chat_messages(ALERT_CHAT), what="the Telegram alert")
    assert message.parse_mode == "HTML"
    shown = telegram_visible(message.text)
    assert len(shown.encode("utf-16-le")) // 2 <= 4096
    assert_says_what_it_cut(shown)
    page = f"{PUBLIC_URL}/ui/incidents/{incident_id}"
    assert f'Trimmed to fit: everything is on <a href="{page}">incident #{incident_id}</a>' in message.text
    # The page the link names holds the whole summary and every label.
    incident = (await api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.api_headers)).json()
    assert incident["summary"] == SUMMARY
    assert incident["labels"] == thirty_labels()


async def test_slack_gets_the_markers_and_the_link_in_block_kit(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    incident_id = await post_alert(api)
    [message] = await eventually(lambda: fake_slack.channel_messages(SLACK_CHANNEL), what="the Slack alert")
    head = message.blocks[0]["text"]
    assert head["type"] == "mrkdwn"  # Block Kit accepted, not the plain-text fallback
    assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if b["type"] == "section")
    assert_says_what_it_cut(head["text"])
    context = [e["text"] for b in message.blocks if b["type"] == "context" for e in b["elements"]]
    page = f"{PUBLIC_URL}/ui/incidents/{incident_id}"
    assert f"Trimmed to fit: everything is on <{page}|incident #{incident_id}>" in context
    assert f"<{page}|incident #{incident_id}>" in message.text  # the notification text says so too


async def test_the_console_shows_what_fits_whole_and_marks_what_does_not(
    api: Api, fake_telegram: FakeTelegram, fake_slack: FakeSlack
) -> None:
    store = ConsoleMessageStore(api.services.db)

    async def console_texts() -> list[str]:
        return [str(message_view(r)["text"]) for r in await store.recent() if r.incident_id is not None]

    # 5,000 characters and 30 labels fit the console's 16,000: shown whole, nothing cut, so nothing said.
    first = await post_alert(api)
    [text] = await eventually(console_texts, what="the console alert")
    assert SUMMARY in text
    assert all(f"{k}={v}" in text for k, v in thirty_labels().items())
    assert "Trimmed" not in text
    # 40,000 characters: 16,384 are stored (the cut says so), and the console's share of those is marked too.
    # (Another alert on another host: no "last time" lines from the first one join its summary.)
    huge = SUMMARY * 8
    second = await post_alert(api, huge, thirty_labels("MemoryFull", "db-2"), fingerprint="aaaaaaaaaaaaaaaa")
    texts = await eventually(lambda: _two(console_texts), what="the second console alert")
    marked = next(t for t in texts if f"incident #{second}" in t)
    assert len(marked) <= 16_000
    stored = (await api.client.get(f"/api/v1/incidents/{second}", headers=api.api_headers)).json()["summary"]
    assert stored.endswith(f"… {len(huge) - len(stored.split('…')[0]):,} more characters not stored")
    cut = MORE.search(marked)
    assert cut is not None
    shown = marked[: cut.start()].rsplit("\n", 1)[-1]
    assert len(shown) + int(cut.group(1).replace(",", "")) == len(stored)
    assert marked.endswith(f"Trimmed to fit: everything is on incident #{second}: {PUBLIC_URL}/ui/incidents/{second}")
    assert first != second


async def _two(texts: Any) -> list[str] | None:
    found: list[str] = await texts()
    return found if len(found) >= 2 else None
