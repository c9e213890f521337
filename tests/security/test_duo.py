"""Duo push step-up end to end (docs/threat-model.md T20, T21, F15): a real controller on loopback with its real local agent,
the fake Telegram Bot API, and the real duo_client speaking HTTPS to the fake Duo Auth API (tests/fakes/duo.py),
which checks every request's HMAC signature.

Approved push → the command runs once; denied → nothing runs; Duo down, 5xx or a refused signature →
"MFA provider unreachable — not executed", audited `mfa_unavailable`, nothing runs; a second command while a
push waits → refused, no second push; the push carries the command, host and requester in `pushinfo`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from tests.conftest import FakeClock
from tests.fakes.duo import Answer, FakeDuo
from tests.fakes.telegram import FakeTelegram, free_port
from tests.live_controller import LiveController, live_controller
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually
from tests.settings import settings_with

from teleops.commands.duo import UNREACHABLE
from teleops.config import Settings
from teleops.domain.command import CommandRecord
from teleops.store.commands import list_commands

FINISHED = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}
PUSH_ASKED = "Approve the Duo push on your phone"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # Telegram dates are real Unix times


@pytest.fixture
def fake_duo() -> Iterator[FakeDuo]:
    fake = FakeDuo()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def duo_skey(fake_duo: FakeDuo) -> str:
    return fake_duo.skey


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram, fake_duo: FakeDuo, duo_skey: str) -> Settings:
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
        users=[{"name": "alice", "role": "operator", "telegram_id": ALICE_ID, "twofactor": "duo"}],
        twofactor={
            "duo": {
                "ikey": fake_duo.ikey,
                "skey": duo_skey,
                "api_host": fake_duo.api_host,
                "timeout": "2s",
                "push_timeout": "20s",
                "ca_certs": str(fake_duo.ca_certs),
            }
        },
        policy={
            "roles": {
                "operator": [
                    {"hosts": ["*"], "commands": ["uptime"]},
                    {"hosts": ["web-*"], "commands": ["echo *"], "require_2fa": True},
                ]
            }
        },
    )


@pytest.fixture
async def live(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveController]:
    async with live_controller(settings, clock, timeout_s=30) as controller:
        assert controller.services.duo is not None
        yield controller


def texts(fake: FakeTelegram) -> list[str]:
    return [m.text for m in fake.chat_messages(ALERT_CHAT)]


async def said(fake: FakeTelegram, fragment: str, *, after: int = 0) -> str:
    return str(
        await eventually(
            lambda: next((t for t in texts(fake)[after:] if fragment in t), None),
            timeout=30,
            what=f"a message with {fragment!r}",
        )
    )


async def finished(live: LiveController, count: int) -> list[CommandRecord]:
    async def done() -> list[CommandRecord]:
        rows = await list_commands(live.services.db)
        return list(rows) if len(rows) >= count and all(c.status in FINISHED for c in rows) else []

    return list(await eventually(done, timeout=30, what=f"{count} finished command(s)"))


async def test_approved_push_runs_the_command_once_and_pushinfo_shows_command_host_requester(
    live: LiveController, fake_telegram: FakeTelegram, fake_duo: FakeDuo
) -> None:
    fake_duo.default = Answer.APPROVE
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo restarted-nginx"))
    asked = await said(fake_telegram, PUSH_ASKED)
    assert "`echo restarted-nginx` on host web-1" in asked
    [run] = await finished(live, 1)
    assert (run.status, run.argv, run.requester, run.output) == (
        "succeeded",
        ["echo", "restarted-nginx"],
        "alice",
        "restarted-nginx\n",
    )
    [push] = fake_duo.pushes()
    assert (push.params["factor"], push.params["device"], push.params["async"]) == ("push", "auto", "1")
    info = parse_qs(push.params["pushinfo"])
    assert info == {"command": ["echo restarted-nginx"], "host": ["web-1"], "requester": ["alice"]}
    assert [r.path for r in fake_duo.requests][:2] == ["/auth/v2/preauth", "/auth/v2/auth"]
    actions = await live.actions()
    assert actions[-3:] == ["command.stepup_required", "2fa.accepted", "command.dispatching"]
    assert fake_duo.rejected_signatures == 0

    # Within the elevation window the next 2FA command runs without another push.
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo second"))
    runs = await finished(live, 2)
    assert runs[0].argv == ["echo", "second"]
    assert len(fake_duo.pushes()) == 1


async def test_denied_push_runs_nothing(live: LiveController, fake_telegram: FakeTelegram, fake_duo: FakeDuo) -> None:
    fake_duo.default = Answer.DENY
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo nope"))
    refused = await said(fake_telegram, "Command refused")
    assert "denied" in refused
    assert "Not executed" in refused
    assert await list_commands(live.services.db) == []
    assert (await live.actions())[-1] == "2fa.rejected"
    assert "command.dispatching" not in await live.actions()


@pytest.mark.parametrize("answer", [Answer.UNREACHABLE, Answer.ERROR_5XX, Answer.SLOW])
async def test_duo_down_fails_closed(
    live: LiveController, fake_telegram: FakeTelegram, fake_duo: FakeDuo, answer: Answer
) -> None:
    fake_duo.default = answer
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo should-not-run"))
    refused = await said(fake_telegram, UNREACHABLE)
    assert refused.startswith("Command refused")
    assert await list_commands(live.services.db) == []
    events = await live.events()
    assert events[-1].action == "mfa_unavailable"
    assert events[-1].data["provider"] == "duo"
    assert events[-1].data["command"] == "echo should-not-run"
    assert "command.dispatching" not in [e.action for e in events]
    assert fake_duo.pushes() == []  # nothing was pushed: the failure came first


@pytest.mark.parametrize("duo_skey", ["not-the-secret-key-the-fake-expects-000000"])
async def test_bad_signature_fails_closed(live: LiveController, fake_telegram: FakeTelegram, fake_duo: FakeDuo) -> None:
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo forged"))
    assert "401" in await said(fake_telegram, UNREACHABLE)
    assert fake_duo.rejected_signatures >= 1
    assert fake_duo.requests == []  # the fake accepted no request
    assert await list_commands(live.services.db) == []
    assert (await live.actions())[-1] == "mfa_unavailable"


async def test_second_request_while_a_push_waits_is_refused(
    live: LiveController, fake_telegram: FakeTelegram, fake_duo: FakeDuo
) -> None:
    fake_duo.default = Answer.WAIT
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo first"))
    await said(fake_telegram, PUSH_ASKED)
    await eventually(lambda: len(fake_duo.pushes()) == 1, what="the first push")
    before = len(texts(fake_telegram))
    fake_telegram.push_update(fake_telegram.message_update(ALERT_CHAT, ALICE_ID, "/run web-1 echo second"))
    refused = await said(fake_telegram, "already waiting", after=before)
    assert "`echo first` on web-1" in refused
    assert len(fake_duo.pushes()) == 1
    # The REST API shares the one slot.
    busy = await live.client.post("/api/v1/commands", json={"host": "web-1", "command": "echo third"}, headers=live.api)
    assert busy.status_code == 403
    assert busy.json()["needs"] == "duo"
    assert len(fake_duo.pushes()) == 1
    assert await list_commands(live.services.db) == []
    # Approving the one push runs exactly the first command.
    assert fake_duo.resolve("alice", Answer.APPROVE) == 1
    [run] = await finished(live, 1)
    assert run.argv == ["echo", "first"]


async def test_rest_waits_for_the_push_and_fails_closed(live: LiveController, fake_duo: FakeDuo) -> None:
    body = {"host": "web-1", "command": "echo via-api"}
    fake_duo.default = Answer.ERROR_5XX
    down = await live.client.post("/api/v1/commands", json=body, headers=live.api)
    assert down.status_code == 503
    assert UNREACHABLE in down.json()["detail"]
    assert await list_commands(live.services.db) == []
    fake_duo.default = Answer.APPROVE
    ok = await live.client.post("/api/v1/commands", json=body, headers=live.api)
    assert ok.status_code == 202, ok.text
    [run] = await finished(live, 1)
    assert run.output == "via-api\n"
    assert parse_qs(fake_duo.pushes()[-1].params["pushinfo"])["command"] == ["echo via-api"]
