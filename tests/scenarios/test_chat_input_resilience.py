"""Issue #19.1 on Telegram: no update can silence chat input, and an input that stops working is seen.

Driven end to end: the app in-process, python-telegram-bot polling the fake Bot API (tests/fakes/telegram.py),
which serves the unreadable updates raw, exactly as a server with another idea of their shape would.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleops.chat.console.gateway import ConsoleGateway
from tests.conftest import Api, FakeClock
from tests.fakes.telegram import BOT_USER, FakeTelegram
from tests.scenarios.chat_input import metric, readyz, unhandled_records
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

WHOAMI_ANSWER = "linked to TeleOps user alice"


def whoami_answers(fake: FakeTelegram, chat: int = ALERT_CHAT) -> int:
    return sum(WHOAMI_ANSWER in m.text for m in fake.chat_messages(chat))


def restricted_member_update(update_id: int) -> dict[str, Any]:
    """The bot restricted in a group, as an older Bot API server sends it: `restricted` without the permission
    fields PTB 22 requires (its parser raises TypeError), the case in the issue."""
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": FakeTelegram.chat(ALERT_CHAT),
            "from": FakeTelegram.user(ALICE_ID),
            "date": int(time.time()),
            "old_chat_member": {"status": "member", "user": BOT_USER},
            "new_chat_member": {"status": "restricted", "user": BOT_USER, "until_date": 0},
        },
    }


def senderless_member_update(update_id: int) -> dict[str, Any]:
    """Added to a chat nobody configured, without `from`: PTB parses it, our reading of it (who added us?) fails."""
    update = restricted_member_update(update_id)
    del update["my_chat_member"]["from"]
    update["my_chat_member"]["chat"] = FakeTelegram.chat(-999)
    update["my_chat_member"]["new_chat_member"] = {"status": "member", "user": BOT_USER}
    return update


async def test_an_update_ptb_cannot_parse_is_skipped_confirmed_reported_and_input_goes_on(
    api: Api, fake_telegram: FakeTelegram
) -> None:
    await eventually(lambda: fake_telegram.calls_of("getUpdates"), what="the first poll")
    with structlog.testing.capture_logs() as logs:
        old_shape = fake_telegram.push_raw(restricted_member_update(fake_telegram.next_update_id()))
        senderless = fake_telegram.push_raw(senderless_member_update(fake_telegram.next_update_id()))
        fake_telegram.push_raw("an update that is a string")  # no update_id to read: confirmed by the next one
        fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
        await eventually(lambda: whoami_answers(fake_telegram) == 1, what="the /whoami sent after them answered")
        await eventually(lambda: fake_telegram.pending_updates == 0, what="every update confirmed by an offset")
        await eventually(
            lambda: len([e for e in logs if e["event"] == "chat.update_unhandled"]) == 3, what="the warnings"
        )
    warned = [e for e in logs if e["event"] == "chat.update_unhandled"]
    assert {e["log_level"] for e in warned} == {"warning"}
    assert [e["update_id"] for e in warned] == [str(old_shape), str(senderless), ""]
    assert "ChatMemberRestricted" in warned[0]["error"]
    records = await eventually(lambda: _at_least(unhandled_records(api), 3), what="the audit records")
    assert [(r["platform"], r["update_id"], r["reason"]) for r in records] == [
        ("telegram", str(old_shape), "unparseable"),
        ("telegram", str(senderless), "unparseable"),
        ("telegram", "", "unparseable"),
    ]
    assert '"status":"restricted"' in records[0]["excerpt"]
    assert len(records[0]["excerpt"]) <= 500
    assert await metric(api, "teleops_chat_updates_unhandled_total", platform="telegram", reason="unparseable") == 3
    # Polling went on with the offset past them: nothing is delivered twice.
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami"))
    await eventually(lambda: whoami_answers(fake_telegram) == 2, what="a second /whoami")
    assert len(await unhandled_records(api)) == 3


async def _at_least(records: Any, count: int) -> Any:
    found = await records
    return found if len(found) >= count else None


async def test_polling_input_is_watched_idle_is_not_stalled_and_a_dead_one_is_told_elsewhere(
    api: Api, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    polls = await eventually(lambda: len(fake_telegram.calls_of("getUpdates")), what="the first poll")
    # Idle: nobody writes for six minutes, but every long poll returns; that is not a stall.
    clock.advance(minutes=6)
    await eventually(lambda: len(fake_telegram.calls_of("getUpdates")) >= polls + 2, what="a poll after the jump")
    body = await readyz(api)
    assert body["status"] == "ready"
    assert body["chat_inputs"]["telegram"]["watched"] is True
    assert body["chat_inputs"]["telegram"]["stalled"] is False
    assert await metric(api, "teleops_chat_input_stalled", platform="telegram") == 0

    # Telegram unreachable: getUpdates fails, and after `input_stall_after` (5 min) that is a problem.
    await fake_telegram.stop()

    async def degraded() -> dict[str, Any] | None:
        clock.advance(minutes=6)  # again if a poll answered just before the server went away
        found = await readyz(api)
        return found if found["status"] == "degraded" else None

    body = await eventually(degraded, what="/readyz degraded")
    assert body["chat_inputs"]["telegram"]["stalled"] is True
    assert body["chat_inputs"]["telegram"]["silent_s"] > 300
    assert body["problems"][0].startswith("telegram input stalled: no successful receive (polling)")
    assert await metric(api, "teleops_chat_input_stalled", platform="telegram") == 1
    assert await metric(api, "teleops_chat_input_silent_seconds", platform="telegram") > 300
    # The people are told on another channel: the console (an alert chat of its own platform), once.
    console = cast(ConsoleGateway, api.services.chat.gateway("console") if api.services.chat else None)
    await eventually(lambda: _console_says(console, "telegram input stalled"), what="the notice in the console")
    await readyz(api)
    assert len(await _console_says(console, "telegram input stalled")) == 1

    await fake_telegram.start()
    body = await eventually(lambda: _ready(api), timeout=60, what="/readyz ready again")
    assert "problems" not in body
    await eventually(lambda: _console_says(console, "telegram input works again"), what="the all-clear")


async def _console_says(console: ConsoleGateway, text: str) -> list[str]:
    return [m["text"] for m in await console.history("admin") if text in m["text"]]


async def _ready(api: Api) -> dict[str, Any] | None:
    body = await readyz(api)
    return body if body["status"] == "ready" else None


@pytest.mark.parametrize("chat_overrides", [{"mode": "webhook", "webhook_secret": "wh-secret-0123456789"}])
async def test_webhook_update_that_cannot_be_parsed_is_answered_200_and_reported(
    api: Api, fake_telegram: FakeTelegram
) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": "wh-secret-0123456789"}
    path = "/api/v1/chat/telegram/webhook"
    # 200: a non-2xx makes Telegram redeliver it and hold back every update behind it.
    response = await api.client.post(path, json=restricted_member_update(77), headers=headers)
    assert response.status_code == 200
    whoami = {"update_id": 78, **fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/whoami")}
    assert (await api.client.post(path, json=whoami, headers=headers)).status_code == 200
    await eventually(lambda: whoami_answers(fake_telegram) == 1, what="the /whoami answer")
    records = await unhandled_records(api)
    assert [(r["update_id"], r["reason"]) for r in records] == [("77", "unparseable")]
    # A stall cannot be seen in webhook mode: /readyz says so instead of pretending.
    inputs = (await readyz(api))["chat_inputs"]["telegram"]
    assert inputs["watched"] is False
    assert inputs["stalled"] is False
    assert "webhook" in inputs["note"]


# -- property: whatever JSON the server sends, a /whoami sent after it is answered ------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
_KINDS = st.sampled_from(["message", "edited_message", "callback_query", "my_chat_member", "channel_post", "poll"])


@st.composite
def _updates(draw: st.DrawFn, fake: FakeTelegram) -> Any:
    """An update as some server might send it: a known kind with any JSON in it, a real message with one field
    replaced by any JSON, or any JSON at all."""
    shape = draw(st.sampled_from(["kind", "mutated", "anything"]))
    if shape == "kind":
        return {draw(_KINDS): draw(_JSON)}
    if shape == "mutated":
        update = fake.message_update(ALICE_ID, ALICE_ID, draw(st.text(max_size=20)))
        key = draw(st.sampled_from(["date", "chat", "from", "text", "message_id", "entities"]))
        update["message"][key] = draw(_JSON)
        return update
    return draw(_JSON)


# One app and one fake serve every example (the function-scoped fixtures are meant to be shared: the property is
# about a long-running poller). Alice's private chat: a group takes 20 messages a minute, which the answers to
# twenty examples would exceed.
@pytest.mark.parametrize("chat_overrides", [{"allowed_chats": [ALERT_CHAT, ALICE_ID]}])
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_json_from_the_server_never_stops_a_later_whoami_being_answered(
    api: Api, fake_telegram: FakeTelegram, data: st.DataObject
) -> None:
    batch = data.draw(st.lists(_updates(fake_telegram), min_size=1, max_size=4), label="updates")
    before = whoami_answers(fake_telegram, ALICE_ID)
    for update in batch:
        if isinstance(update, dict):
            update = {**update, "update_id": fake_telegram.next_update_id()}
        fake_telegram.push_raw(update)
    fake_telegram.push_update(fake_telegram.message_update(ALICE_ID, ALICE_ID, "/whoami"))
    await eventually(lambda: whoami_answers(fake_telegram, ALICE_ID) > before, what=f"/whoami after {batch!r}")
    await eventually(lambda: fake_telegram.pending_updates == 0, what="the batch confirmed")
