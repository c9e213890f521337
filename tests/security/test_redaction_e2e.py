"""Redaction in the output path (docs/threat-model.md T24), end to end: a real controller on loopback with its real local
agent (a `teleops agent` child process), the fake Telegram Bot API driven by python-telegram-bot.

A command prints canary secrets — built-in shapes (AWS key id, `password=`, a bearer token, a PEM private key)
and a configured secret value in 6 encodings — some of them split across output chunks by printing slowly.
None of them may reach the database (any table), the REST API, the chat, or the server's and agent's logs.
The local agent runs without a policy file, so it masks only the built-in shapes: the configured value is
caught by the controller, which proves the controller's own streaming redaction.
"""

from __future__ import annotations

import base64
import sys
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram, free_port
from tests.live_controller import live_controller
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, eventually
from tests.settings import settings_with

from teleops.config import Settings
from teleops.domain.command import CommandRecord
from teleops.server.services import Services
from teleops.store.commands import list_commands

CONFIGURED = "Canary/Val+ue=9f3kQ!x"
RAW = CONFIGURED.encode()
ENCODED = {
    "exact": CONFIGURED,
    "base64": base64.b64encode(RAW).decode(),
    "base64url": base64.urlsafe_b64encode(RAW).decode(),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "url": urllib.parse.quote(CONFIGURED, safe=""),
}
BUILTIN = {
    "aws_key_id": "AKIAZQ7CANARY4XY2WQ3",
    "password": "Hunt3rCanaryPw77",
    "bearer": "eyCanaryBearerTok3n.abc.def",
    "pem_body": "MIIEcanaryPEMbodyLine0123456789abcdef",
}
SCRIPT = f"""
import sys, time
def say(text):
    sys.stdout.write(text); sys.stdout.flush()
def slowly(text):
    # Split across the agent's output messages: the agent passes on all but its last 256 characters (its
    # hold-back window), so the filler after the second half makes it cut exactly between the two halves.
    half = len(text) // 2
    say(text[:half]); time.sleep(0.3)
    say(text[half:] + "." * (256 - len(text) + half)); time.sleep(0.3)
    say("\\n" + "-" * 300)
say("start\\n")
say("aws {BUILTIN["aws_key_id"][:10]}"); time.sleep(0.6); say("{BUILTIN["aws_key_id"][10:]} done\\n")
say("db password={BUILTIN["password"]}\\n")
say("Authorization: Bearer {BUILTIN["bearer"]}\\n")
for name, form in {ENCODED!r}.items():
    say(name + ": "); slowly(form); say("\\n")
say("-----BEGIN RSA PRIVATE KEY-----\\n{BUILTIN["pem_body"]}\\n-----END RSA PRIVATE KEY-----\\n")
say("end\\n")
"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # Telegram dates are real Unix times


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": db_url},
        # The canary script and this interpreter are under root-only directories: the local agent runs it as root,
        # which can read TeleOps' data, so that has to be accepted explicitly (server/local_agent_user.py).
        local_agent={"enabled": True, "name": "web-1", "run_as": "root", "allow_data_access": True},
        telegram={
            "token": fake_telegram.token,
            "base_url": fake_telegram.base_url,
            "allowed_chats": [ALERT_CHAT],
            "alert_chats": [ALERT_CHAT],
            "poll_timeout": "1s",
        },
        users=[{"name": "alice", "role": "operator", "telegram_id": ALICE_ID}],
        redaction={"secrets": [CONFIGURED]},
        policy={"roles": {"operator": [{"hosts": ["*"], "commands": [f"{sys.executable} *"], "require_2fa": False}]}},
    )


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[Services, httpx.AsyncClient, str]]:
    async with live_controller(settings, clock) as controller:
        yield controller.services, controller.client, controller.api_token


async def everything_in_the_database(services: Services) -> str:
    def dump(conn: Connection) -> str:
        if conn.dialect.name == "sqlite":
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
        else:
            names = (
                conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"))
                .scalars()
                .all()
            )
        # Table names come from the database's own catalogue, not from input.
        return "\n".join(repr(conn.execute(text(f'SELECT * FROM "{name}"')).all()) for name in names)  # noqa: S608

    return await services.db.run_in_transaction(dump)


async def test_canary_secrets_never_reach_db_api_chat_or_logs(
    services: tuple[Services, httpx.AsyncClient, str],
    fake_telegram: FakeTelegram,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    found, client, token = services
    script = tmp_path / "canaries.py"
    script.write_text(SCRIPT)
    fake = fake_telegram
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, f"/run web-1 {sys.executable} {script}"))

    async def done() -> CommandRecord | None:
        rows = await list_commands(found.db)
        return rows[0] if rows and rows[0].status in ("succeeded", "failed") else None

    record = await eventually(done, timeout=60, what="the canary command to finish")
    assert record.status == "succeeded", record.reason
    # The command really printed everything (masked), so the absence below is redaction, not a failed run.
    for name in ENCODED:
        assert f"{name}: [REDACTED]" in record.output
    assert "aws [REDACTED] done" in record.output
    assert "[REDACTED]" in record.output.split("-----BEGIN RSA PRIVATE KEY-----")[-1]
    await eventually(
        lambda: any(f"command {record.id} · succeeded" in m.text for m in fake.chat_messages(ALERT_CHAT)),
        what="the final chat edit",
    )
    api = await client.get(f"/api/v1/commands/{record.id}", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200

    places = {
        "database": await everything_in_the_database(found),
        "api": api.text,
        "chat": "\n".join(repr(call.params) for call in fake.calls),
        "logs": "".join(capfd.readouterr()),
    }
    for place, content in places.items():
        for name, form in {**ENCODED, **BUILTIN}.items():
            assert form not in content, f"{name} canary leaked into the {place}"
