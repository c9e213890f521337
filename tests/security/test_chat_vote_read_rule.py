"""`/approve ID` and `/deny ID` typed in chat by someone who may not read that command (issue #18, the read rule):
a real controller on loopback with its local agent "web-1", and the fake Telegram Bot API driven through
python-telegram-bot.

alice (operator) asks for a command that needs a second person; the approval request in the room quotes it, as
before (a room is a room: everyone in it reads the request). bob (a viewer, whose policy covers no host) types
`/approve N` and `/deny N`: he is answered exactly as for a number that names no command — nothing about what
became of it, who decided, or its command line — as the REST vote answers 404. alice, who may read it, still gets
the real refusal (her own request), and nothing was counted.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram, StoredMessage, free_port
from tests.live_controller import LiveController, live_controller
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually
from tests.settings import settings_with

from teleops.config import Settings
from teleops.domain.command import CommandStatus
from teleops.store.approvals import ApprovalStatus, get_approval
from teleops.store.commands import get_command

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

BOB_ID = 2002
MARK = "votemark3z"  # in alice's command line
POLICY = {
    "operator": [{"hosts": ["web-*"], "commands": ["echo *"], "require_approval": True, "require_2fa": False}],
    "viewer": [{"hosts": ["nowhere-*"], "commands": ["uptime"]}],
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # Telegram dates are real Unix times


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": db_url},
        local_agent={"enabled": True, "name": "web-1"},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
        users=[
            {"name": "alice", "role": "operator", "telegram_id": ALICE_ID},
            {"name": "bob", "role": "viewer", "telegram_id": BOB_ID},
        ],
        policy={"roles": POLICY},
    )


@pytest.fixture
async def controller(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveController]:
    async with live_controller(settings, clock, timeout_s=30) as live:
        yield live


async def answer_to(fake: FakeTelegram, user_id: int, username: str, text: str) -> StoredMessage:
    """`username` types `text` in the room; returns the bot's first message after it."""
    before = len(fake.chat_messages(ALERT_CHAT))
    fake.push_update(fake.message_update(ALERT_CHAT, user_id, text, username=username))

    def answered() -> StoredMessage | None:
        after = fake.chat_messages(ALERT_CHAT)[before:]
        return after[0] if after else None

    found: StoredMessage = await eventually(answered, timeout=30, what=f"the answer to {username}'s {text!r}")
    return found


def not_waiting(command_id: int) -> str:
    return f"Command {command_id} is not waiting for approval; check the number."


async def test_a_vote_by_number_from_who_may_not_read_the_command_is_answered_as_for_a_missing_one(
    controller: LiveController, fake_telegram: FakeTelegram
) -> None:
    fake = fake_telegram
    request = await answer_to(fake, ALICE_ID, "alice", f"/run web-1 echo {MARK}")
    found = re.search(r"\(command (\d+)\)", request.text)
    assert found, request.text
    command_id = int(found.group(1))
    # The request in the room is unchanged: it quotes the command, for everyone in the room to decide on.
    assert request.text.startswith(f"Approval needed: alice asks to run `echo {MARK}` on web-1 (command {command_id})")
    assert [b["text"] for b in (request.reply_markup or {})["inline_keyboard"][0]] == ["Approve", "Deny"]

    missing = command_id + 1000
    assert (await answer_to(fake, BOB_ID, "bob", f"/approve {missing}")).text == not_waiting(missing)
    for verb in ("approve", "deny"):
        answer = await answer_to(fake, BOB_ID, "bob", f"/{verb} {command_id}")
        assert answer.text == not_waiting(command_id), answer.text
    # alice may read her own command: she is told why her vote does not count.
    own = await answer_to(fake, ALICE_ID, "alice", f"/approve {command_id}")
    assert own.text.startswith("Not counted: you asked for this command"), own.text

    said = fake.chat_messages(ALERT_CHAT)  # what the bot posted in the room
    since = said[next(i for i, m in enumerate(said) if m.message_id == request.message_id) + 1 :]
    assert all(MARK not in m.text for m in since), since
    db = controller.services.db
    approval = await get_approval(db, command_id)
    assert approval is not None
    assert approval.status is ApprovalStatus.PENDING
    assert approval.approved_by == ()
    assert (await get_command(db, command_id)).status == CommandStatus.QUEUED
    # Refused, and audited as every refused vote is (the REST vote does the same).
    refused = [e for e in await controller.events() if e.action == "approval.refused"]
    assert [e.actor for e in refused] == ["bob", "bob", "alice"]
