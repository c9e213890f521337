"""Issue #19.1 on Slack, in both modes: no envelope, event or request can silence input, a dropped socket and a
reconnect lose nothing, and an unreadable delivery is acknowledged (not redelivered), logged, audited and counted.

Driven end to end against the fake Slack (tests/fakes/slack.py) through the real slack-sdk / slack-bolt.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from teleops.config import Settings
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack, sign
from tests.scenarios.chat_input import metric, readyz, unhandled_records
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ALERTS = "C0ALERT"
ALICE = "U1"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
EVENTS_URL = "/api/v1/chat/slack/events"


@pytest.fixture
def slack_mode() -> str:
    return "socket"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack, slack_mode: str) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        slack={
            "mode": slack_mode,
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "signing_secret": SECRET,
            "base_url": fake_slack.base_url,
            "alert_channels": [ALERTS],
            "team_id": "T1",
        },
        users=[{"name": "alice", "role": "operator", "slack_id": f"T1/{ALICE}"}],
    )


def whoami_answers(fake: FakeSlack) -> int:
    return sum("linked to TeleOps user alice" in m.text for m in fake.channel_messages(ALERTS))


def envelope(kind: str, payload: Any, envelope_id: str | None = None) -> str:
    frame = {"envelope_id": envelope_id or str(uuid.uuid4()), "type": kind, "payload": payload,
             "accepts_response_payload": False, "retry_attempt": 0, "retry_reason": ""}  # fmt: skip
    return json.dumps(frame)


def reaction_payload() -> dict[str, Any]:
    """An event of a kind TeleOps has no handler for (the app may be subscribed to more than it reads)."""
    return {"token": "legacy-verification-token", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": "EvREACTION01", "event_time": 1,
            "event": {"type": "reaction_added", "user": ALICE, "reaction": "eyes",
                      "item": {"type": "message", "channel": ALERTS, "ts": "1.000001"}}}  # fmt: skip


async def test_malformed_envelopes_and_unknown_events_are_acked_reported_and_input_goes_on(
    api: Api, fake_slack: FakeSlack
) -> None:
    await fake_slack.wait_for_socket()
    await fake_slack.push_raw("{not json")  # no envelope id: nothing to acknowledge
    await fake_slack.push_raw(envelope("events_api", "a payload that is a string", envelope_id="env-string"))
    unknown = await fake_slack.push("events_api", reaction_payload())
    broken_button = fake_slack.button_payload(ALERTS, ALICE, "1.000001", "ack:1")
    broken_button["actions"] = ["not an action object"]
    await fake_slack.push("interactive", broken_button)
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(lambda: whoami_answers(fake_slack) == 1, what="the /teleops whoami sent after them")
    # Confirmed over the socket, so Slack does not send them again.
    await eventually(lambda: "env-string" in fake_slack.acks and unknown in fake_slack.acks, what="the acks")
    records = await eventually(lambda: _at_least(unhandled_records(api), 4), what="the audit records")
    reasons = {(r["update_id"], r["reason"]) for r in records}
    assert reasons == {
        ("", "malformed_envelope"),
        ("env-string", "malformed_envelope"),
        ("EvREACTION01", "unknown_kind"),  # Slack's event id (the envelope id where the payload has none)
        (broken_button["trigger_id"], "unparseable"),
    }
    assert all(r["platform"] == "slack" for r in records)
    excerpt = next(r["excerpt"] for r in records if r["reason"] == "unknown_kind")
    assert "reaction_added" in excerpt
    assert "legacy-verification-token" not in excerpt  # the payload's token is redacted
    assert await metric(api, "teleops_chat_updates_unhandled_total", platform="slack", reason="malformed_envelope") == 2
    assert await metric(api, "teleops_chat_updates_unhandled_total", platform="slack", reason="unknown_kind") == 1
    inputs = (await readyz(api))["chat_inputs"]["slack"]
    assert inputs == {**inputs, "mode": "socket", "watched": True, "stalled": False}


async def _at_least(records: Any, count: int) -> Any:
    found = await records
    return found if len(found) >= count else None


async def test_a_dropped_socket_reconnects_and_loses_nothing_and_alerts_keep_going_out(
    api: Api, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    await fake_slack.wait_for_socket()
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(lambda: whoami_answers(fake_slack) == 1, what="whoami before the drop")
    await fake_slack.drop_sockets()
    # While the socket is down, an alert still goes out (the Web API is separate from the socket).
    response = await api.client.post(
        "/api/v1/alerts/alertmanager", content=alert_body(),
        headers={**api.ingest_headers, "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 200
    await eventually(lambda: any("DiskFull" in m.text for m in fake_slack.channel_messages(ALERTS)), what="alert")
    # `push` waits for the client to come back (slack-sdk's session monitor reconnects through
    # apps.connections.open), then delivers: the command is answered.
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(lambda: whoami_answers(fake_slack) == 2, timeout=60, what="whoami after the reconnect")
    assert fake_slack.connections == 2
    assert len(fake_slack.calls_of("apps.connections.open")) == 2
    # A live session is a working input however quiet it is.
    clock.advance(minutes=10)
    inputs = (await readyz(api))["chat_inputs"]["slack"]
    assert inputs["stalled"] is False
    assert await unhandled_records(api) == []


@pytest.mark.parametrize("slack_mode", ["events"])
async def test_events_api_unreadable_and_unknown_requests_are_answered_200_and_reported(
    api: Api, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    now = int(clock().timestamp())

    async def post(body: bytes, content_type: str = "application/json") -> int:
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(now),
                   "X-Slack-Signature": sign(SECRET, body, now)}  # fmt: skip
        return (await api.client.post(EVENTS_URL, content=body, headers=headers)).status_code

    # 200 for what can never be handled: a non-2xx makes Slack retry it and count it against the app.
    assert await post(b'{"type": "event_callback", "event": ') == 200
    assert await post(json.dumps(reaction_payload()).encode()) == 200
    command = fake_slack.command_payload(ALERTS, ALICE, "whoami")
    form = urlencode(command).encode()
    assert await post(form, "application/x-www-form-urlencoded") == 200
    await eventually(lambda: whoami_answers(fake_slack) == 1, what="the whoami answer")
    records = await unhandled_records(api)
    assert [(r["update_id"], r["reason"]) for r in records] == [
        ("", "malformed_envelope"),
        ("EvREACTION01", "unknown_kind"),
    ]
    inputs = (await readyz(api))["chat_inputs"]["slack"]
    assert inputs["watched"] is False
    assert "events mode" in inputs["note"]


async def test_a_socket_that_stays_down_is_a_stall_told_in_the_console_until_it_is_back(
    api: Api, fake_slack: FakeSlack, clock: FakeClock
) -> None:
    await fake_slack.wait_for_socket()
    await fake_slack.stop()  # Slack unreachable: the session closes and cannot be opened again

    async def degraded() -> dict[str, Any] | None:
        clock.advance(minutes=6)
        found = await readyz(api)
        return found if found["status"] == "degraded" else None

    body = await eventually(degraded, what="/readyz degraded")
    assert body["problems"][0].startswith("slack input stalled: no successful receive (socket)")
    assert await metric(api, "teleops_chat_input_stalled", platform="slack") == 1
    console: Any = api.services.chat.gateway("console") if api.services.chat else None

    async def console_says(text: str) -> bool:
        return any(text in m["text"] for m in await console.history("admin"))

    await eventually(lambda: console_says("slack input stalled"), what="the notice in the console")
    await fake_slack.start()
    await fake_slack.wait_for_socket(timeout=60)  # slack-sdk's session monitor reconnects by itself
    await eventually(lambda: _status_is(api, "ready"), what="/readyz ready again")
    await eventually(lambda: console_says("slack input works again"), what="the all-clear")
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(lambda: whoami_answers(fake_slack) == 1, what="whoami after the outage")


async def _status_is(api: Api, status: str) -> bool:
    return bool((await readyz(api))["status"] == status)
