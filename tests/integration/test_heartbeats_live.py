"""Heartbeats in against a real `teleops serve` on the wall clock (issue #20): a 1s/1s heartbeat that stops pinging
pages the person on call on the (fake) Telegram Bot API by itself, the next ping resolves the incident, `/heartbeats`
answers in chat, and the real Alertmanager's always-firing Watchdog keeps a heartbeat up through its webhook."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.telegram import StoredMessage
from tests.integration.servers import AlertmanagerServer, TeleopsServer, eventually, start_teleops, stop_process
from tests.integration.test_telegram_commands_e2e import FakeInThread

ALERT_CHAT = -1001
ALICE = 1001


@pytest.fixture
def telegram() -> Iterator[FakeInThread]:
    fake = FakeInThread()
    fake.run(fake.fake.start())
    yield fake
    fake.close()


@pytest.fixture
def server(tmp_path: Path, telegram: FakeInThread) -> Iterator[TeleopsServer]:
    config = {
        "telegram": {
            "token": telegram.fake.token,
            "base_url": telegram.fake.base_url,
            "mode": "polling",
            "poll_timeout": "1s",
            "alert_chats": [ALERT_CHAT],
        },
        "users": [{"name": "alice", "telegram_id": ALICE}],
        "oncall": {
            "rotations": [{"name": "primary", "members": ["alice"], "shift": "7d", "handoff": "Mon 09:00"}],
            "escalation": [{"after": "0s", "notify": "rotation:primary"}],
        },
        "heartbeats": [
            {"name": "nightly-backup", "interval": "1s", "grace": "1s", "description": "The 02:00 pg_dump to S3."},
            {"name": "weekly-report", "interval": "7d", "grace": "1h"},
        ],
    }
    started = start_teleops(tmp_path / "ctl", config=config)
    yield started
    stop_process(started.process)


def messages(telegram: FakeInThread, chat: int) -> list[StoredMessage]:
    return telegram.call(lambda: list(telegram.fake.chat_messages(chat)))


def heartbeat_incidents(server: TeleopsServer) -> list[dict[str, Any]]:
    return [i for i in server.incidents() if i["source"] == "heartbeat"]


def ping(server: TeleopsServer, name: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/heartbeats/{name}/ping", headers=server.ingest_headers, timeout=10)


def test_a_silent_job_pages_the_person_on_call_and_its_next_ping_resolves_the_incident(
    server: TeleopsServer, telegram: FakeInThread
) -> None:
    # Started a few seconds ago and never pinged: it may already be late; this ping resolves that first miss.
    assert ping(server, "nightly-backup").status_code == 200
    page = eventually(
        lambda: next((m for m in messages(telegram, ALICE) if "nightly-backup missed: last ping at" in m.text), None),
        what="the page about the missed heartbeat in alice's chat",
    )
    assert "expected every 1s (+ 1s grace)" in page.text
    [incident] = [i for i in heartbeat_incidents(server) if i["status"] == "open"]
    assert (incident["name"], incident["severity"]) == ("Heartbeat nightly-backup missed", "critical")
    assert "The 02:00 pg_dump to S3." in server.incident(incident["id"])["description"]
    assert server.metric("teleops_heartbeats_late") == 1

    assert ping(server, "nightly-backup").json()["state"] == "up"
    assert server.incident(incident["id"])["status"] == "resolved"
    assert server.metric("teleops_heartbeat_pings_total", heartbeat="nightly-backup") == 2


def test_heartbeats_in_chat_lists_each_with_its_state_and_last_ping(
    server: TeleopsServer, telegram: FakeInThread
) -> None:
    assert ping(server, "weekly-report").status_code == 200
    telegram.call(lambda: telegram.fake.push_update(telegram.fake.message_update(ALERT_CHAT, ALICE, "/heartbeats")))
    answer = eventually(
        lambda: next((m for m in messages(telegram, ALERT_CHAT) if m.text.startswith("Heartbeats:")), None),
        what="the answer to /heartbeats",
    )
    lines = answer.text.splitlines()
    assert any(line.startswith("✅ weekly-report — up, last ping ") and "every 7d (+1h)" in line for line in lines)
    assert any("nightly-backup — " in line for line in lines)
    telegram.call(lambda: telegram.fake.push_update(telegram.fake.message_update(ALERT_CHAT, ALICE, "/help")))
    eventually(
        lambda: any("/heartbeats — jobs that must check in" in m.text for m in messages(telegram, ALERT_CHAT)),
        what="/help to mention /heartbeats",
    )


# --- Alertmanager's Watchdog as a heartbeat ----------------------------------------------------------------------

StartAlertmanager = Callable[..., AlertmanagerServer]


def test_alertmanagers_always_firing_watchdog_keeps_a_heartbeat_up(
    tmp_path: Path, alertmanager_server: StartAlertmanager
) -> None:
    teleops = start_teleops(
        tmp_path / "ctl", config={"heartbeats": [{"name": "watchdog", "interval": "10s", "grace": "5s"}]}
    )
    try:
        # The recipe of docs/heartbeats.md: a webhook receiver whose url is the ping endpoint, resent more often
        # than the heartbeat's interval (repeat_interval); the ingest token in http_config.authorization.
        am = alertmanager_server(
            f"{teleops.url}/api/v1/heartbeats/watchdog/ping",
            teleops.ingest_token,
            group_interval="1s",
            repeat_interval="1s",
        )
        started = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        watchdog = {"labels": {"alertname": "Watchdog", "severity": "none"}, "startsAt": started}
        am.post_alerts([watchdog])  # Prometheus sends it for ever: `vector(1)`
        eventually(
            lambda: teleops.metric("teleops_heartbeat_pings_total", heartbeat="watchdog") >= 3,
            what="three Watchdog notifications as pings",
            timeout=60,
        )
        state = httpx.get(f"{teleops.url}/api/v1/heartbeats/watchdog", headers=teleops.api_headers, timeout=10).json()
        assert state["state"] == "up"
        assert am.metric("alertmanager_notifications_failed_total", integration="webhook") == 0
        assert heartbeat_incidents(teleops) == []
    finally:
        stop_process(teleops.process)
