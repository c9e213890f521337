"""docs/threat-model.md T02/T03/F09 on `POST /api/v1/chat/slack/events`: only a v0 HMAC of the exact raw body, signed within
±300 s of the controller's (injected) clock, gets anything done; a valid request delivered twice runs once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack, sign
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

from teleops.config import Settings
from teleops.store.incidents import get_incident

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
URL = "/api/v1/chat/slack/events"
ALERTS = "C0ALERT"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        slack={
            "mode": "events",
            "bot_token": fake_slack.bot_token,
            "signing_secret": SECRET,
            "base_url": fake_slack.base_url,
            "alert_channels": [ALERTS],
        },
        users=[{"name": "alice", "role": "operator", "slack_id": "T1/U1"}],
    )


def note_body(text_: str = "/note checked", event_id: str = "Ev0001") -> bytes:
    payload = FakeSlack.message_payload(ALERTS, "U1", text_, event_id=event_id)
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(body: bytes, timestamp: int, *, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": sign(secret, body, timestamp),
    }


async def seen_updates(api: Api) -> int:
    async with api.services.db.engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT count(*) FROM chat_updates WHERE platform = 'slack'"))).scalar_one()
        )


async def assert_nothing_done(api: Api, fake: FakeSlack, before: int) -> None:
    assert await seen_updates(api) == 0
    assert [c.method for c in fake.calls[before:]] == []


def now_s(clock: FakeClock) -> int:
    return int(clock().timestamp())


async def test_url_verification_challenge_is_answered(api: Api, clock: FakeClock) -> None:
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()  # fmt: skip
    response = await api.client.post(URL, content=body, headers=signed(body, now_s(clock)))
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    unsigned = await api.client.post(URL, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401


def _tampered(body: bytes) -> bytes:
    index = body.index(b"checked")
    return body[:index] + b"C" + body[index + 1 :]


def _reserialised(body: bytes) -> bytes:
    return json.dumps(json.loads(body), indent=1).encode()  # same JSON value, other bytes


@pytest.mark.parametrize(
    "case",
    ["tampered_byte", "reserialised_json", "stale", "future", "zero", "v1_prefix", "no_signature", "no_timestamp",
     "two_signatures", "wrong_secret", "garbage_timestamp"],
)  # fmt: skip
async def test_bad_signatures_are_refused_with_nothing_done(
    api: Api, clock: FakeClock, fake_slack: FakeSlack, case: str
) -> None:
    await api.client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=api.ingest_headers)
    await eventually(lambda: fake_slack.channel_messages(ALERTS), what="the alert message")
    before = len(fake_slack.calls)
    body, now = note_body(), now_s(clock)
    headers = signed(body, now)
    sent = body
    if case == "tampered_byte":
        sent = _tampered(body)
    elif case == "reserialised_json":
        sent = _reserialised(body)
    elif case == "stale":
        headers = signed(body, now - 301)
    elif case == "future":
        headers = signed(body, now + 301)
    elif case == "zero":
        headers = signed(body, 0)
    elif case == "v1_prefix":
        headers["X-Slack-Signature"] = "v1=" + headers["X-Slack-Signature"].removeprefix("v0=")
    elif case == "no_signature":
        del headers["X-Slack-Signature"]
    elif case == "no_timestamp":
        del headers["X-Slack-Request-Timestamp"]
    elif case == "wrong_secret":
        headers = signed(body, now, secret="not-the-secret")
    elif case == "garbage_timestamp":
        headers["X-Slack-Request-Timestamp"] = "1e9"
    header_list = list(headers.items())
    if case == "two_signatures":
        header_list.append(("X-Slack-Signature", headers["X-Slack-Signature"]))
    response = await api.client.post(URL, content=sent, headers=header_list)
    assert response.status_code == 401, case
    await assert_nothing_done(api, fake_slack, before)
    incident = await get_incident(api.services.db, 1)
    assert [e for e in incident.timeline if e.kind == "note"] == []


async def test_the_window_edges_follow_the_injected_clock(api: Api, clock: FakeClock, fake_slack: FakeSlack) -> None:
    body = note_body("/whoami", event_id="EvEdge")
    edge = now_s(clock) - 300
    ok = await api.client.post(URL, content=body, headers=signed(body, edge))
    assert ok.status_code == 200
    clock.advance(seconds=2)  # the same signed request, now 302 s old by the controller's clock
    late = await api.client.post(URL, content=body, headers=signed(body, edge))
    assert late.status_code == 401


async def test_the_same_valid_request_twice_runs_once(api: Api, clock: FakeClock, fake_slack: FakeSlack) -> None:
    await api.client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=api.ingest_headers)
    incident_message = (await eventually(lambda: fake_slack.channel_messages(ALERTS), what="the alert"))[0]
    # Sent "now" by the controller's (fake) clock: a message dated ahead of it is not executed.
    payload = FakeSlack.message_payload(ALERTS, "U1", "/note checked", event_id="EvTwice", ts=now_s(clock))
    payload["event"]["thread_ts"] = incident_message.ts
    body = json.dumps(payload).encode()
    first = await api.client.post(URL, content=body, headers=signed(body, now_s(clock)))
    retry = await api.client.post(
        URL,
        content=body,
        headers={**signed(body, now_s(clock)), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (first.status_code, retry.status_code) == (200, 200)
    await eventually(lambda: fake_slack.channel_messages(ALERTS, thread=incident_message.ts), what="the note answer")
    incident = await get_incident(api.services.db, 1)
    notes = [e for e in incident.timeline if e.kind == "note"]
    assert len(notes) == 1
    assert notes[0].data == {"text": "checked", "via": "slack:T1/U1"}
    assert len(fake_slack.channel_messages(ALERTS, thread=incident_message.ts)) == 1
