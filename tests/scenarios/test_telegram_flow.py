"""End to end on a fake Telegram Bot API driven by python-telegram-bot: alert in -> message with buttons,
Ack edits it, identity rules, stale/forwarded/edited updates, outages, 429 and markup fallback."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest
from sqlalchemy.engine import Connection

from teleops.store.audit import iter_events
from teleops.store.incidents import get_incident
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_queue import OutboxStatus
from tests.conftest import Api
from tests.fakes.telegram import FakeTelegram, StoredMessage
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, alert_body, eventually


async def post_alert(api: Api, body: bytes) -> int:
    response = await api.client.post(
        "/api/v1/alerts/alertmanager", content=body, headers={**api.ingest_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["results"][0]["incident_id"]) if "results" in response.json() else 0


def sent_texts(fake: FakeTelegram, chat: int = ALERT_CHAT) -> list[str]:
    return [
        str(c.params.get("text", ""))
        for c in fake.calls_of("sendMessage")
        if str(c.params.get("chat_id")) == str(chat) and c.status == 200
    ]


async def first_alert_message(api: Api, fake: FakeTelegram) -> StoredMessage:
    await post_alert(api, alert_body())
    await eventually(lambda: fake.chat_messages(ALERT_CHAT), what="the alert message")
    return fake.chat_messages(ALERT_CHAT)[0]


async def test_alert_posts_a_message_with_buttons(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    assert "DiskFull" in message.text
    assert "Disk / is 97% full on web-1" in message.text
    assert '<a href="https://runbooks.example.org/DiskFull">Runbook</a>' in message.text
    assert message.parse_mode == "HTML"
    assert message.reply_markup is not None
    labels = [b["text"] for b in message.reply_markup["inline_keyboard"][0]]
    assert labels == ["Ack", "Resolve", "Snooze 1h"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in message.reply_markup["inline_keyboard"][0])
    assert fake_telegram.calls_of("setMyCommands")


async def test_ack_button_edits_the_message_and_acks_the_incident(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    data = message.reply_markup["inline_keyboard"][0][0]["callback_data"] if message.reply_markup else ""
    fake_telegram.push_update(fake_telegram.button_update(ALERT_CHAT, ALICE_ID, message.message_id, data))
    await eventually(lambda: message.edits >= 1, what="the edit")
    assert "acknowledged by alice" in message.text
    assert [b["text"] for b in (message.reply_markup or {"inline_keyboard": [[]]})["inline_keyboard"][0]] == [
        "Resolve",
        "Snooze 1h",
    ]
    incident_id = int(data.split(":")[1])
    incident = await get_incident(api.services.db, incident_id)
    assert incident.status == "acknowledged"
    assert incident.acknowledged_by == "alice"
    assert any(
        e.kind == "incident.acknowledged" and e.data.get("via") == f"telegram:{ALICE_ID}" for e in incident.timeline
    )
    await eventually(lambda: fake_telegram.calls_of("answerCallbackQuery"), what="the button answer")


async def test_a_button_acts_only_on_the_incident_of_its_message(api: Api, fake_telegram: FakeTelegram) -> None:
    """Forged callback data `resolve:2` pressed on incident #1's message (issue #19.5): refused and audited."""
    first = await first_alert_message(api, fake_telegram)
    await post_alert(api, alert_body(name="MemoryHigh", fingerprint="aaaaaaaaaaaaaaaa"))
    await eventually(lambda: len(fake_telegram.chat_messages(ALERT_CHAT)) >= 2, what="the second alert")
    first_id = (
        int(first.reply_markup["inline_keyboard"][0][1]["callback_data"].split(":")[1]) if first.reply_markup else 0
    )
    other_id = first_id + 1
    fake_telegram.push_update(
        fake_telegram.button_update(ALERT_CHAT, ALICE_ID, first.message_id, f"resolve:{other_id}")
    )
    await eventually(lambda: fake_telegram.calls_of("answerCallbackQuery"), what="the button answer")
    answer = fake_telegram.calls_of("answerCallbackQuery")[-1].params
    assert "not for this message's incident" in str(answer.get("text"))
    assert (await get_incident(api.services.db, other_id)).status == "open"
    assert (await get_incident(api.services.db, first_id)).status == "open"

    def refused(conn: Connection) -> list[str]:
        return [e.subject for e in iter_events(conn) if e.action == "chat.button_refused"]

    assert await api.services.db.run_in_transaction(refused) == [f"incident:{other_id}"]


async def test_resolve_via_api_edits_and_replies(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    incident_id = int(message.reply_markup["inline_keyboard"][0][0]["callback_data"].split(":")[1])  # type: ignore[index]
    response = await api.client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=api.api_headers)
    assert response.status_code == 200
    await eventually(lambda: "resolved by alice" in message.text, what="the resolved edit")
    assert message.reply_markup is None
    replies = await eventually(
        lambda: [m for m in fake_telegram.chat_messages(ALERT_CHAT) if m.reply_to == message.message_id],
        what="the resolution reply",
    )
    assert "resolved by alice" in replies[0].text


async def test_unlinked_user_gets_one_refusal_and_spoofed_username_is_refused(
    api: Api, fake_telegram: FakeTelegram
) -> None:
    message = await first_alert_message(api, fake_telegram)
    before = len(fake_telegram.chat_messages(ALERT_CHAT))
    # Same username as alice, another immutable id: not alice.
    fake_telegram.push_update(
        fake_telegram.message_update(ALERT_CHAT, 666, "/ack", username="alice", reply_to=message.message_id)
    )
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, 666, "/incidents", username="alice"))
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
    await eventually(
        lambda: any("linked to TeleOps user alice" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)),
        what="whoami",
    )
    new = [m.text for m in fake_telegram.chat_messages(ALERT_CHAT)[before:]]
    refusals = [t for t in new if "not linked" in t]
    assert len(refusals) == 1, new
    assert not any("#" in t and "open" in t and "DiskFull" in t for t in new)  # /incidents not answered
    incident = await get_incident(api.services.db, 1)
    assert incident.status == "open"


async def test_forwarded_edited_and_bot_messages_never_act(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    fake = fake_telegram
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id, forwarded=True))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id, edited=True))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id, sender_chat=-100))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
    await eventually(lambda: any("This chat's id is" in m.text for m in fake.chat_messages(ALERT_CHAT)), what="whoami")
    assert (await get_incident(api.services.db, 1)).status == "open"
    assert message.edits == 0


LEGACY_FORWARDS = {
    "forward_from": {"id": 1, "is_bot": False, "first_name": "Someone"},
    "forward_from_chat": {"id": -100999, "type": "channel", "title": "elsewhere"},
    "forward_date": 1_700_000_000,
    "forward_sender_name": "Hidden Person",
    "is_automatic_forward": True,
}


@pytest.mark.parametrize("field", sorted(LEGACY_FORWARDS))
async def test_a_forward_with_only_the_older_fields_never_acts(
    api: Api, fake_telegram: FakeTelegram, field: str
) -> None:
    """Bot API < 7.0 (self-hosted, older servers) marks forwards without `forward_origin` (issue #19.2)."""
    message = await first_alert_message(api, fake_telegram)
    update = fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id)
    update["message"][field] = LEGACY_FORWARDS[field]
    fake_telegram.push_update(update)
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
    await eventually(
        lambda: any("This chat's id is" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="whoami"
    )
    assert (await get_incident(api.services.db, 1)).status == "open"


async def test_a_message_dated_in_the_future_is_not_executed(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    ahead = int(time.time()) + 600
    fake_telegram.push_update(
        fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id, date=ahead)
    )
    await eventually(
        lambda: any("dated in the future" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="told"
    )
    assert (await get_incident(api.services.db, 1)).status == "open"


async def test_stale_update_is_not_executed_and_the_user_is_told(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    old = int(time.time()) - 600
    fake_telegram.push_update(
        fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/ack", reply_to=message.message_id, date=old)
    )
    await eventually(
        lambda: any("not executed" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="told"
    )
    assert (await get_incident(api.services.db, 1)).status == "open"


async def test_same_update_twice_runs_once(api: Api, fake_telegram: FakeTelegram) -> None:
    message = await first_alert_message(api, fake_telegram)
    update = fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/note checked the disk", reply_to=message.message_id)
    fake_telegram.push_update({"update_id": 77, **update})
    await eventually(lambda: any("Note added" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="note")
    fake_telegram.push_update({"update_id": 77, **update})  # a replay of the same delivery
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
    await eventually(
        lambda: any("This chat's id" in m.text for m in fake_telegram.chat_messages(ALERT_CHAT)), what="whoami"
    )
    incident = await get_incident(api.services.db, 1)
    notes = [e for e in incident.timeline if e.kind == "note"]
    assert len(notes) == 1
    assert notes[0].actor == "alice"
    assert notes[0].data == {"text": "checked the disk", "via": f"telegram:{ALICE_ID}"}


async def test_link_code_binds_a_new_account(api: Api, fake_telegram: FakeTelegram) -> None:
    chat = api.services.chat
    assert chat is not None
    await api.services.users.ensure("bob", "operator", now=api.services.clock())
    code = await chat.identities.invite("bob", now=api.services.clock())
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, 2002, "/link WRONG-CODE", username="bob"))
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, 2002, f"/link {code}", username="bob"))
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, 3003, f"/link {code}", username="eve"))
    await eventually(lambda: len(fake_telegram.chat_messages(ALERT_CHAT)) >= 3, what="three answers")
    texts = [m.text for m in fake_telegram.chat_messages(ALERT_CHAT)]
    assert "Link failed" in texts[0]
    assert "you are bob" in texts[1]
    assert "already used" in texts[2]
    assert await chat.identities.user_of("telegram", "2002") == "bob"


async def test_markup_injection_in_labels_is_escaped(api: Api, fake_telegram: FakeTelegram) -> None:
    await post_alert(api, alert_body(team='<a href="https://evil.example">x</a> & <b>', fingerprint="inj"))
    message = await eventually(lambda: fake_telegram.chat_messages(ALERT_CHAT), what="message")
    assert '<a href="https://evil.example"' not in message[0].text
    assert "&lt;a href=" in message[0].text
    assert message[0].parse_mode == "HTML"  # escaped well enough that Telegram accepted the HTML


async def test_cant_parse_entities_falls_back_to_plain_text(api: Api, fake_telegram: FakeTelegram) -> None:
    fake_telegram.reject_parse_modes.add("HTML")
    message = await first_alert_message(api, fake_telegram)
    assert message.parse_mode is None
    assert "DiskFull" in message.text
    assert "<b>" not in message.text
    metrics = await api.client.get("/metrics")
    assert 'teleops_render_fallback_total{platform="telegram"} 1.0' in metrics.text


async def test_retry_after_is_honoured(api: Api, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendMessage", status=429, retry_after=2)
    await first_alert_message(api, fake_telegram)
    sends = fake_telegram.calls_of("sendMessage")
    assert [c.status for c in sends] == [429, 200]
    assert sends[1].at - sends[0].at >= 2.0


async def test_outage_loses_nothing_and_sends_nothing_twice_in_order(api: Api, fake_telegram: FakeTelegram) -> None:
    await first_alert_message(api, fake_telegram)
    await fake_telegram.stop()  # connection refused from now on
    for n in range(3):
        await post_alert(api, alert_body(name=f"Outage{n}", fingerprint=f"out{n}"))
    fake_telegram.fail("sendMessage", status=502, times=1)
    await fake_telegram.start()
    await eventually(lambda: len(fake_telegram.chat_messages(ALERT_CHAT)) >= 4, timeout=60, what="all messages")
    texts = [m.text for m in fake_telegram.chat_messages(ALERT_CHAT)]
    assert len(texts) == 4
    headlines = [t.split("\n")[0] for t in texts]
    assert [next(n for n in ("DiskFull", "Outage0", "Outage1", "Outage2") if n in h) for h in headlines] == [
        "DiskFull",
        "Outage0",
        "Outage1",
        "Outage2",
    ]


async def test_bot_leaves_a_chat_it_was_not_configured_for(api: Api, fake_telegram: FakeTelegram) -> None:
    fake_telegram.push_update(fake_telegram.added_to_chat_update(-999, 31337))
    calls = await eventually(lambda: fake_telegram.calls_of("leaveChat"), what="leaveChat")
    assert str(calls[0].params["chat_id"]) == "-999"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the pipelined WAL fsync is SQLite's
async def test_an_alert_is_read_and_claimed_during_its_fsync_but_announced_only_after_it(
    api: Api, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0003: the outbox worker may prepare a message while the commit that wrote it is being fsynced, but
    nothing reaches the platform that a power loss could take back (the alert's POST is not answered yet)."""
    committer = api.services.db._committer
    assert committer is not None
    gate = threading.Event()
    real_fsync = committer._fsync_wal
    database = committer._wal_path.with_name(committer._wal_path.name.removesuffix("-wal"))

    def alert_committed() -> bool:
        # A connection of its own sees what is committed though not yet fsynced (WAL mode).
        with sqlite3.connect(database) as conn:
            (count,) = conn.execute("SELECT count(*) FROM outbox WHERE platform = 'telegram'").fetchone()
        return int(count) > 0

    def gated_fsync() -> None:
        # Hold only the fsync that covers the alert's commit: one held for some other write in flight (start-up
        # work, a heartbeat) would keep the alert's batch from being applied at all, and nothing could claim it.
        if alert_committed():
            gate.wait(timeout=30)
        real_fsync()

    monkeypatch.setattr(committer, "_fsync_wal", gated_fsync)
    outbox = OutboxStore(api.services.db)
    post = asyncio.create_task(post_alert(api, alert_body()))
    try:

        async def claimed() -> bool:
            rows = await outbox.rows("telegram")
            return any(r.status in (OutboxStatus.SENDING, OutboxStatus.SENT) for r in rows)

        await eventually(claimed, what="the announcement claimed while its commit waits for the fsync")
        await asyncio.sleep(0.3)
        assert not post.done()  # the sender has no 2xx yet
        assert sent_texts(fake_telegram) == []  # and the chat has nothing yet
    finally:
        gate.set()
    await post
    await eventually(lambda: sent_texts(fake_telegram), what="the announcement after the fsync")
