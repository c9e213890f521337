"""TOTP step-up end to end (docs/threat-model.md T18, T19): a real controller on loopback (uvicorn in this process) with its
real local agent (a `teleops agent` child process), the fake Telegram Bot API driven by python-telegram-bot,
and the REST API with `X-TeleOps-OTP`.

Chat: a command whose rule needs 2FA asks for a code → a wrong code is refused → the right code, as a reply
to the prompt, runs exactly that command → the same code again is a replay → within the elevation window no
code is asked. Each refusal changes nothing but the audit log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram, free_port
from tests.live_controller import LiveController, live_controller
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, alert_body, eventually
from tests.settings import settings_with

from teleops.chat.access import CODE_PROMPT
from teleops.config import Settings
from teleops.domain.command import CommandRecord
from teleops.store.commands import list_commands
from teleops.store.tokens import TokenKind

FINISHED = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}


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
        users=[{"name": "alice", "role": "operator", "telegram_id": ALICE_ID}],
        twofactor={"lockout_after": 3},
        policy={
            "roles": {
                # `echo` stands in for `systemctl restart`: the same rule shape, harmless to run in a test.
                "operator": [
                    {"hosts": ["*"], "commands": ["uptime"]},
                    {"hosts": ["web-*"], "commands": ["echo *"], "require_2fa": True},
                ]
            }
        },
    )


async def enroll(live: LiveController, user: str = "alice") -> pyotp.TOTP:
    uri = await live.services.stepup.enroll(user, now=live.services.clock(), by="admin")
    return pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


@pytest.fixture
async def live(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveController]:
    async with live_controller(settings, clock) as controller:
        yield controller


def texts(fake: FakeTelegram) -> list[str]:
    return [m.text for m in fake.chat_messages(ALERT_CHAT)]


async def said(fake: FakeTelegram, fragment: str, *, after: int = 0) -> str:
    return str(
        await eventually(
            lambda: next((t for t in texts(fake)[after:] if fragment in t), None), what=f"a message with {fragment!r}"
        )
    )


async def finished(live: LiveController, count: int) -> list[CommandRecord]:
    async def done() -> list[CommandRecord]:
        rows = await list_commands(live.services.db)
        return list(rows) if len(rows) >= count and all(c.status in FINISHED for c in rows) else []

    return list(await eventually(done, timeout=30, what=f"{count} finished command(s)"))


def a_wrong_code(totp: pyotp.TOTP, at: float) -> str:
    right = {totp.at(at + offset) for offset in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in right)


async def test_code_asked_wrong_refused_right_runs_replay_rejected_window_asks_nothing(
    live: LiveController, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    fake = fake_telegram
    totp = await enroll(live)
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo restarted-nginx"))
    prompt_text = await said(fake, CODE_PROMPT)
    assert "`echo restarted-nginx` on web-1" in prompt_text
    prompt = next(m for m in fake.chat_messages(ALERT_CHAT) if CODE_PROMPT in m.text)
    assert await list_commands(live.services.db) == []
    assert (await live.actions())[-1] == "command.stepup_required"

    # A wrong code: refused, nothing run, only the audit log grows.
    before = len(texts(fake))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, f"/otp {a_wrong_code(totp, clock().timestamp())}"))
    assert "wrong code" in await said(fake, "wrong code", after=before)
    assert await list_commands(live.services.db) == []
    assert (await live.actions())[-2:] == ["2fa.rejected", "command.stepup_required"]

    # The right code, as a reply to the prompt (after the 1 s throttle), runs exactly the waiting command.
    clock.advance(seconds=2)
    code = totp.at(clock())
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, code, reply_to=prompt.message_id))
    [run] = await finished(live, 1)
    assert (run.status, run.argv, run.requester, run.output) == (
        "succeeded",
        ["echo", "restarted-nginx"],
        "alice",
        "restarted-nginx\n",
    )
    assert (await live.actions())[-2:] == ["2fa.accepted", "command.dispatching"]

    # The same code again: a replay, refused; nothing else runs.
    before = len(texts(fake))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, f"/otp {code}"))
    assert "already used" in await said(fake, "Code refused", after=before)
    assert len(await list_commands(live.services.db)) == 1
    assert (await live.actions())[-1] == "2fa.rejected"

    # Within the elevation window the next 2FA command runs without a prompt.
    prompts = sum(CODE_PROMPT in t for t in texts(fake))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo second"))
    runs = await finished(live, 2)
    assert runs[0].argv == ["echo", "second"]
    assert runs[0].status == "succeeded"
    assert sum(CODE_PROMPT in t for t in texts(fake)) == prompts


async def test_repeated_wrong_codes_lock_with_a_clear_message_and_nothing_runs(
    live: LiveController, fake_telegram: FakeTelegram, clock: FakeClock
) -> None:
    fake = fake_telegram
    totp = await enroll(live)
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo hi"))
    await said(fake, CODE_PROMPT)
    for attempt in range(3):
        before = len(texts(fake))
        wrong = a_wrong_code(totp, clock().timestamp())
        fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, f"/otp {wrong}"))
        await said(fake, "still waiting" if attempt < 2 else "now locked", after=before)
        clock.advance(seconds=5)  # past each throttle
    assert "teleops user 2fa-unlock" in texts(fake)[-1]
    # Locked: even the right code runs nothing.
    before = len(texts(fake))
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, f"/otp {totp.at(clock())}"))
    assert "locked" in await said(fake, "locked", after=before)
    assert await list_commands(live.services.db) == []
    assert "2fa.locked" in await live.actions()
    assert "command.dispatching" not in await live.actions()


async def test_rest_answers_403_until_the_request_carries_a_fresh_code(live: LiveController, clock: FakeClock) -> None:
    totp = await enroll(live)
    body = {"host": "web-1", "command": "echo via-api"}
    missing = await live.client.post("/api/v1/commands", json=body, headers=live.api)
    assert missing.status_code == 403
    assert missing.json()["needs"] == "otp"
    assert "X-TeleOps-OTP: CODE" in missing.json()["detail"]
    wrong = a_wrong_code(totp, clock().timestamp())
    refused = await live.client.post("/api/v1/commands", json=body, headers={**live.api, "X-TeleOps-OTP": wrong})
    assert refused.status_code == 403
    assert "wrong code" in refused.json()["detail"]
    assert await list_commands(live.services.db) == []
    clock.advance(seconds=2)
    ok = await live.client.post("/api/v1/commands", json=body, headers={**live.api, "X-TeleOps-OTP": totp.at(clock())})
    assert ok.status_code == 202, ok.text
    [run] = await finished(live, 1)
    assert run.output == "via-api\n"


async def test_a_reply_to_the_prompt_is_a_code_where_the_prompt_is_not_remembered(
    settings: Settings, clock: FakeClock, fake_telegram: FakeTelegram
) -> None:
    """Another replica, or this one after a restart, gets the reply to a code prompt about an incident's command: it
    is judged as a code (and elevates), never run as a command on the incident's host."""
    fake = fake_telegram
    async with live_controller(settings, clock) as first:
        totp = await enroll(first)
        token = await first.services.tokens.create(TokenKind.INGEST, "alertmanager", now=clock())
        posted = await first.client.post(
            "/api/v1/alerts/alertmanager",
            content=alert_body(instance="web-1:9100"),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert posted.status_code == 200, posted.text
        await said(fake, "DiskFull")
        incident = next(m for m in fake.chat_messages(ALERT_CHAT) if "DiskFull" in m.text)
        fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "echo from-incident", reply_to=incident.message_id))
        await said(fake, CODE_PROMPT)
        prompt = next(m for m in fake.chat_messages(ALERT_CHAT) if CODE_PROMPT in m.text)
    async with live_controller(settings, clock, user="admin") as second:  # the waiting command is forgotten
        before = len(texts(fake))
        code = totp.at(clock())
        fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, code, reply_to=prompt.message_id))
        assert "commands needing 2FA run without a new code" in await said(fake, "ode accepted", after=before)
        assert await list_commands(second.services.db) == []  # the code was not run as a command
        fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "echo from-incident", reply_to=incident.message_id))
        [run] = await finished(second, 1)  # elevated: sent again, it runs without another prompt
        assert (run.argv, run.status) == (["echo", "from-incident"], "succeeded")
