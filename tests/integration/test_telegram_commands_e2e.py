"""The whole Telegram flow against a real `teleops serve` with its embedded agent and a fake Bot API:
an Alertmanager alert becomes a message with buttons, a linked operator's reply `uptime` runs on the host and
its real output comes back in the chat, Ack edits the message, and an unlinked user is refused."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.fakes.telegram import FakeTelegram, StoredMessage
from tests.integration.servers import TeleopsServer, eventually, start_teleops, stop_process

T = TypeVar("T")
ALERT_CHAT = -1001
ALICE = 1001
FIRING = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures/firing.json"


class FakeInThread:
    """The fake Bot API on its own event loop, so the test can block (subprocesses, polling) meanwhile."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = self.call(lambda: FakeTelegram())

    def call(self, fn: Callable[[], T]) -> T:
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the test thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def close(self) -> None:
        self.run(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def telegram() -> Iterator[FakeInThread]:
    fake = FakeInThread()
    fake.run(fake.fake.start())
    yield fake
    fake.close()


@pytest.fixture
def role() -> str:
    return "operator"


@pytest.fixture
def server(tmp_path: Path, telegram: FakeInThread, role: str) -> Iterator[TeleopsServer]:
    config = {
        "telegram": {
            "token": telegram.fake.token,
            "base_url": telegram.fake.base_url,
            "mode": "polling",
            "poll_timeout": "1s",
            "alert_chats": [ALERT_CHAT],
        },
        "users": [{"name": "alice", "role": role, "telegram_id": ALICE}],
    }
    started = start_teleops(tmp_path / "ctl", local_agent=True, config=config)
    yield started
    stop_process(started.process)


def messages(telegram: FakeInThread) -> list[StoredMessage]:
    return telegram.call(lambda: list(telegram.fake.chat_messages(ALERT_CHAT)))


def test_reply_runs_the_command_on_the_host_and_ack_edits_the_message(
    server: TeleopsServer, telegram: FakeInThread
) -> None:
    eventually(
        lambda: httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers).json()["items"][0]["online"],
        what="the embedded agent",
    )
    body = json.loads(FIRING.read_text())
    body["alerts"][0]["labels"]["teleops_host"] = "localhost"  # the host of the embedded agent
    response = httpx.post(f"{server.url}/api/v1/alerts/alertmanager", json=body, headers=server.ingest_headers)
    assert response.status_code == 200
    incident_msg = eventually(lambda: next(iter(messages(telegram)), None), what="the incident message")
    assert "DiskFull" in incident_msg.text
    buttons = [b["text"] for row in (incident_msg.reply_markup or {}).get("inline_keyboard", []) for b in row]
    assert buttons[:3] == ["Ack", "Resolve", "Snooze 1h"]

    update = telegram.call(
        lambda: telegram.fake.message_update(ALERT_CHAT, ALICE, "uptime", reply_to=incident_msg.message_id)
    )
    telegram.call(lambda: telegram.fake.push_update(update))
    done = eventually(
        lambda: next((m for m in messages(telegram) if "load average" in m.text and "exit 0" in m.text), None),
        what="uptime's real output with its exit code",
    )
    assert done.message_id != incident_msg.message_id
    assert done.reply_to == update["message"]["message_id"]  # the output answers the message that asked for it

    ack = incident_msg.reply_markup["inline_keyboard"][0][0]["callback_data"]  # type: ignore[index]
    press = telegram.call(lambda: telegram.fake.button_update(ALERT_CHAT, ALICE, incident_msg.message_id, ack))
    telegram.call(lambda: telegram.fake.push_update(press))
    eventually(
        lambda: (
            "acknowledged by alice"
            in telegram.call(lambda: telegram.fake.messages[(ALERT_CHAT, incident_msg.message_id)].text)
        ),
        what="the incident message edited by the ack",
    )
    incident = server.incident(response.json()["results"][0]["incident_id"])
    kinds = [event["kind"] for event in incident["timeline"]]
    assert "incident.acknowledged" in kinds
    assert any(kind.startswith("command.") for kind in kinds)

    before = len(messages(telegram))
    stranger = telegram.call(
        lambda: telegram.fake.message_update(
            ALERT_CHAT, 666, "uptime", username="alice", reply_to=incident_msg.message_id
        )
    )
    telegram.call(lambda: telegram.fake.push_update(stranger))
    refusal = eventually(lambda: messages(telegram)[before:] or None, what="a refusal for the unlinked user")
    assert len(refusal) == 1
    assert "load average" not in refusal[0].text


def test_a_reply_on_a_host_without_an_agent_is_answered_with_the_reason(
    server: TeleopsServer, telegram: FakeInThread
) -> None:
    body = json.loads(FIRING.read_text())  # host web-1: no agent runs there
    response = httpx.post(f"{server.url}/api/v1/alerts/alertmanager", json=body, headers=server.ingest_headers)
    assert response.status_code == 200
    incident_msg = eventually(lambda: next(iter(messages(telegram)), None), what="the incident message")
    update = telegram.call(
        lambda: telegram.fake.message_update(ALERT_CHAT, ALICE, "uptime", reply_to=incident_msg.message_id)
    )
    telegram.call(lambda: telegram.fake.push_update(update))
    answer = eventually(lambda: messages(telegram)[1:] or None, what="an answer to the reply")
    assert "web-1" in answer[0].text
    assert "load average" not in answer[0].text


@pytest.mark.parametrize("role", ["admin"])  # operators may not run `sleep`
def test_a_quick_command_is_shown_once_finished_and_a_slow_one_as_progress_then_edited(
    server: TeleopsServer, telegram: FakeInThread
) -> None:
    """Chats allow about a message a second: a command that ends within QUICK_RESULT_S gets one message with its
    result (no "running…" then an edit a second later); a slower one shows progress, then its result."""
    eventually(
        lambda: httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers).json()["items"][0]["online"],
        what="the embedded agent",
    )
    body = json.loads(FIRING.read_text())
    body["alerts"][0]["labels"]["teleops_host"] = "localhost"
    assert httpx.post(f"{server.url}/api/v1/alerts/alertmanager", json=body, headers=server.ingest_headers).is_success
    incident_msg = eventually(lambda: next(iter(messages(telegram)), None), what="the incident message")

    def reply(text: str) -> int:
        before = len(messages(telegram))
        update = telegram.call(
            lambda: telegram.fake.message_update(ALERT_CHAT, ALICE, text, reply_to=incident_msg.message_id)
        )
        telegram.call(lambda: telegram.fake.push_update(update))
        return before

    before = reply("echo quick")
    quick = eventually(lambda: messages(telegram)[before:] or None, what="the quick command's message")
    assert len(quick) == 1
    assert quick[0].reply_to is not None
    assert quick[0].reply_to != incident_msg.message_id  # the person's "echo quick", not the incident message
    assert "exit 0" in quick[0].text
    assert "quick" in quick[0].text
    assert "running…" not in quick[0].text

    before = reply("seq 1 5000")  # quick, but longer than a message: the result message, then the whole output
    long_output = eventually(lambda: messages(telegram)[before + 1 :] or None, what="the output file")
    result, document = messages(telegram)[before], long_output[0]
    assert "exit 0" in result.text
    assert result.edits == 0
    assert document.document == f"command-{_command_id(result.text)}-output.txt"
    assert document.document_bytes == "".join(f"{n}\n" for n in range(1, 5001)).encode()
    assert document.reply_to == result.message_id

    before = reply("sleep 1.5")
    slow = eventually(lambda: messages(telegram)[before:] or None, what="the slow command's message")
    assert "running…" in slow[0].text
    eventually(
        lambda: "exit 0" in telegram.call(lambda: telegram.fake.messages[(ALERT_CHAT, slow[0].message_id)].text),
        what="the progress message edited into the result",
    )
    assert len(messages(telegram)) == before + 1  # one message, edited: not a second one

    # A slow command does not hold up the chat: a quick one sent right after it is answered first.
    before = reply("sleep 1.5")
    reply("echo next")
    both = eventually(
        lambda: messages(telegram)[before:] if len(messages(telegram)) >= before + 2 else None, what="both"
    )
    assert "next" in both[0].text
    assert "exit 0" in both[0].text
    assert "running…" in both[1].text


def _command_id(text: str) -> str:
    found = re.search(r"command (\d+) ·", text)
    assert found is not None, text
    return found.group(1)
