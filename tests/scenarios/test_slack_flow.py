"""End to end on a fake Slack driven by the real slack-sdk / slack-bolt (Socket Mode): alert in -> Block Kit
message with buttons, Ack edits it (chat.update), each incident a thread (replies are commands on its host,
answers land in the thread), /teleops, foreign workspaces, uninvited channels, 429 Retry-After, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from teleops.config import Settings
from teleops.store.incidents import get_incident
from tests.conftest import Api, FakeClock
from tests.fakes.slack import FakeSlack, SlackMessage
from tests.integration.servers import TeleopsServer, teleops_server  # noqa: F401  (fixture)
from tests.scenarios.conftest import alert_body, eventually
from tests.settings import settings_with

ALERTS = "C0ALERT"
ALICE = "U1"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        slack={
            "mode": "socket",
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "alert_channels": [ALERTS],
            "team_id": "T1",
        },
        users=[{"name": "alice", "role": "operator", "slack_id": f"T1/{ALICE}"}],
    )


async def post_alert(api: Api, body: bytes) -> None:
    response = await api.client.post(
        "/api/v1/alerts/alertmanager", content=body, headers={**api.ingest_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def first_alert(api: Api, fake: FakeSlack) -> SlackMessage:
    await post_alert(api, alert_body())
    await eventually(lambda: fake.channel_messages(ALERTS), what="the alert message")
    return fake.channel_messages(ALERTS)[0]


async def test_alert_is_a_block_kit_message_with_buttons_and_a_confirm_on_resolve(
    api: Api, fake_slack: FakeSlack
) -> None:
    message = await first_alert(api, fake_slack)
    kinds = [b["type"] for b in message.blocks]
    assert kinds[0] == "section"
    assert "context" in kinds
    assert kinds[-1] == "actions"
    section = message.blocks[0]["text"]["text"]
    assert "CRITICAL" in section
    assert "DiskFull" in section
    assert "`web-1`" in section
    assert "Disk / is 97% full on web-1" in section
    context = " ".join(e["text"] for b in message.blocks if b["type"] == "context" for e in b["elements"])
    assert "<https://runbooks.example.org/DiskFull|Runbook>" in context
    assert message.button_values() == ["ack:1", "resolve:1", "snooze:1:1h"]
    buttons = message.blocks[-1]["elements"]
    assert "confirm" in buttons[1]
    assert buttons[1]["style"] == "danger"
    assert "confirm" not in buttons[0]
    assert "DiskFull" in message.text  # the notification text beside the blocks


async def test_ack_button_edits_the_message_with_chat_update(api: Api, fake_slack: FakeSlack) -> None:
    message = await first_alert(api, fake_slack)
    envelope = await fake_slack.push("interactive", fake_slack.button_payload(ALERTS, ALICE, message.ts, "ack:1"))
    await eventually(lambda: message.edits >= 1, what="chat.update")
    assert envelope in fake_slack.acks  # acknowledged over the socket
    assert "acknowledged by alice" in message.block_text()
    assert message.button_values() == ["resolve:1", "snooze:1:1h"]
    incident = await get_incident(api.services.db, 1)
    assert incident.status == "acknowledged"
    assert any(e.data.get("via") == f"slack:T1/{ALICE}" for e in incident.timeline if e.kind == "incident.acknowledged")


async def test_a_reply_in_the_incident_thread_is_a_command_on_its_host_answered_in_the_thread(
    api: Api, fake_slack: FakeSlack
) -> None:
    message = await first_alert(api, fake_slack)
    await fake_slack.push("events_api", fake_slack.message_payload(ALERTS, ALICE, "uptime", thread_ts=message.ts))
    replies = await eventually(lambda: fake_slack.channel_messages(ALERTS, thread=message.ts), what="a thread answer")
    # No agent serves web-1 in this in-process app: the command path answered, in the incident's thread.
    assert "Not run" in replies[0].text, replies[0].text
    assert "web-1" in replies[0].text
    assert len(fake_slack.channel_messages(ALERTS)) == 1  # nothing went to the channel itself


async def test_slash_command_is_acknowledged_then_answered_in_the_channel(api: Api, fake_slack: FakeSlack) -> None:
    await first_alert(api, fake_slack)
    envelope = await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "incidents"))
    await eventually(lambda: envelope in fake_slack.acks, what="the ack")
    assert "received" in fake_slack.acks[envelope]["payload"]["text"]
    answer = await eventually(
        lambda: [m for m in fake_slack.channel_messages(ALERTS) if "#1" in m.text and "on web-1" in m.text],
        what="the /incidents answer",
    )
    assert "DiskFull" in answer[0].text
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "ack 1"))
    await eventually(lambda: fake_slack.channel_messages(ALERTS)[0].edits >= 1, what="the ack edit")
    assert (await get_incident(api.services.db, 1)).status == "acknowledged"


async def test_people_of_another_workspace_and_unlinked_people_are_refused(api: Api, fake_slack: FakeSlack) -> None:
    message = await first_alert(api, fake_slack)
    # Same user id as alice, another team: not alice, and not even told anything.
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "ack 1", team="T2"))
    await fake_slack.push("interactive", fake_slack.button_payload(ALERTS, ALICE, message.ts, "resolve:1", team="T2"))
    # An unlinked person of our workspace: one short refusal.
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, "U666", "ack 1"))
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, "U666", "incidents"))
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(
        lambda: (
            any("linked to TeleOps user alice" in m.text for m in fake_slack.channel_messages(ALERTS))
            and any("not linked" in m.text for m in fake_slack.channel_messages(ALERTS))
        ),
        what="whoami and the refusal",
    )
    texts = [m.text for m in fake_slack.channel_messages(ALERTS)[1:]]
    assert sum("not linked" in t for t in texts) == 1, texts
    assert (await get_incident(api.services.db, 1)).status == "open"
    assert message.edits == 0


async def test_bot_leaves_a_channel_it_was_not_configured_for(api: Api, fake_slack: FakeSlack) -> None:
    await fake_slack.push("events_api", fake_slack.joined_payload("C0EVIL"))
    await fake_slack.push("events_api", fake_slack.joined_payload(ALERTS))
    await eventually(lambda: fake_slack.left, what="conversations.leave")
    await fake_slack.push("slash_commands", fake_slack.command_payload(ALERTS, ALICE, "whoami"))
    await eventually(lambda: fake_slack.channel_messages(ALERTS), what="whoami")
    assert fake_slack.left == ["C0EVIL"]


async def test_retry_after_is_honoured_and_nothing_is_lost_or_doubled(api: Api, fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.postMessage", status=429, retry_after=2)
    await first_alert(api, fake_slack)
    posts = fake_slack.calls_of("chat.postMessage")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 2.0
    assert len(fake_slack.channel_messages(ALERTS)) == 1


async def test_slack_down_then_back_loses_nothing_and_keeps_order(api: Api, fake_slack: FakeSlack) -> None:
    await first_alert(api, fake_slack)
    await fake_slack.stop()
    for n in range(3):
        await post_alert(api, alert_body(name=f"Outage{n}", fingerprint=f"out{n}"))
    fake_slack.fail("chat.postMessage", status=503)
    await fake_slack.start()
    await eventually(lambda: len(fake_slack.channel_messages(ALERTS)) >= 4, timeout=60, what="all messages")
    headlines = [m.text.split("\n")[0] for m in fake_slack.channel_messages(ALERTS)]
    names = [next(n for n in ("DiskFull", "Outage0", "Outage1", "Outage2") if n in h) for h in headlines]
    assert names == ["DiskFull", "Outage0", "Outage1", "Outage2"]


async def test_a_thread_reply_runs_on_the_real_local_agent_and_the_output_streams_into_the_thread(
    teleops_server: Callable[..., TeleopsServer],  # noqa: F811  (the fixture imported above)
    fake_slack: FakeSlack,
) -> None:
    config = {
        "slack": {
            "bot_token": fake_slack.bot_token,
            "app_token": fake_slack.app_token,
            "base_url": fake_slack.base_url,
            "alert_channels": [ALERTS],
        },
        "users": [{"name": "alice", "role": "admin", "slack_id": f"T1/{ALICE}"}],
    }
    # Started in a thread: the server calls this loop's fake Slack while it boots.
    server = await asyncio.to_thread(teleops_server, local_agent=True, config=config)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post(
            "/api/v1/alerts/alertmanager",
            content=alert_body(instance="localhost:9100", teleops_host="localhost"),
            headers={**server.ingest_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        message = (await eventually(lambda: fake_slack.channel_messages(ALERTS), timeout=30, what="the alert"))[0]

        async def agent_online() -> bool:
            agents = (await client.get("/api/v1/agents", headers=server.api_headers)).json()["items"]
            return any(a["name"] == "localhost" and a["online"] for a in agents)

        await eventually(agent_online, timeout=30, what="the local agent")
    await fake_slack.push(
        "events_api", fake_slack.message_payload(ALERTS, ALICE, "echo hello-from-the-thread", thread_ts=message.ts)
    )
    await eventually(
        lambda: any("exit 0" in m.block_text() for m in fake_slack.channel_messages(ALERTS, thread=message.ts)),
        timeout=30,
        what=f"the final output in the thread (server log: {server.log})",
    )
    replies = fake_slack.channel_messages(ALERTS, thread=message.ts)
    assert len(replies) == 1  # one message, edited as the output arrived
    assert "hello-from-the-thread" in replies[0].block_text()
    assert "localhost $ echo hello-from-the-thread" in replies[0].block_text()
    assert len(fake_slack.channel_messages(ALERTS)) == 1
    # Output longer than a Slack message: the thread message keeps the tail, the whole output comes as a file.
    await fake_slack.push("events_api", fake_slack.message_payload(ALERTS, ALICE, "seq 1 4000", thread_ts=message.ts))
    shared = await eventually(
        lambda: [m for m in fake_slack.channel_messages(ALERTS, thread=message.ts) if m.file is not None],
        timeout=30,
        what=f"the output file in the thread (server log: {server.log})",
    )
    name, data = shared[0].file
    assert name.endswith("-output.txt")
    assert data.decode().split() == [str(n) for n in range(1, 4001)]
    final = [m for m in fake_slack.channel_messages(ALERTS, thread=message.ts) if "seq 1 4000" in m.block_text()]
    assert "4000" in final[0].block_text()  # the tail stays inline


async def test_a_controller_restart_loses_nothing_and_sends_nothing_twice(
    settings: Settings, clock: FakeClock, fake_slack: FakeSlack
) -> None:
    from teleops.server.app import create_app
    from teleops.store.tokens import TokenKind

    async def controller() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            services = app.state.services
            token = await services.tokens.create(TokenKind.INGEST, f"s{len(fake_slack.calls)}", now=clock())
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
                yield client, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    # First life: one alert delivered; then Slack goes away and two more alerts are only in the outbox.
    async for client, headers in controller():
        await client.post("/api/v1/alerts/alertmanager", content=alert_body(), headers=headers)
        await eventually(lambda: len(fake_slack.channel_messages(ALERTS)) == 1, what="the first alert")
        await fake_slack.stop()
        for n in range(2):
            body = alert_body(name=f"Outage{n}", fingerprint=f"out{n}")
            assert (await client.post("/api/v1/alerts/alertmanager", content=body, headers=headers)).status_code == 200
    # Second life, Slack back: the two pending messages arrive once each, the first is not sent again.
    await fake_slack.start()
    async for _client, _headers in controller():
        await eventually(lambda: len(fake_slack.channel_messages(ALERTS)) >= 3, timeout=60, what="the pending alerts")
        await asyncio.sleep(1.5)  # a window in which a duplicate would show up
        headlines = [m.text.split("\n")[0] for m in fake_slack.channel_messages(ALERTS)]
        names = [next(n for n in ("DiskFull", "Outage0", "Outage1") if n in h) for h in headlines]
        assert names == ["DiskFull", "Outage0", "Outage1"]
