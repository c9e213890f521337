"""Scenario memory end to end: a real controller on loopback (uvicorn, in this process), its real local agent
(a `teleops agent` child process, killed by PID on shutdown), and the fake Telegram Bot API driven through
python-telegram-bot.

alice answers an alert with a harmless stand-in command and resolves it; the alert comes back; the new
message shows what alice ran, its exit code and output, flags that the fix did not stick, and offers Run
again; bob's press previews, then runs it under bob's policy; carol's role may not run it; forged buttons run
nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from teleops.config import Settings
from teleops.domain.incident import TimelineEvent
from teleops.memory.runbooks import parse_runbook
from teleops.server.services import Services
from teleops.store.commands import list_commands
from teleops.store.incidents import get_incident
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.fakes.telegram import FakeTelegram, StoredMessage, free_port
from tests.live_controller import live_controller
from tests.scenarios.conftest import ALERT_CHAT, ALICE_ID, FIRING, eventually
from tests.settings import settings_with

BOB_ID = 2002
CAROL_ID = 3003
FINISHED = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}


NGINX_RUNBOOK = """
alert: NginxDown
description: nginx stopped answering
params:
  host: {label: teleops_host, regex: "^[a-z0-9-]{1,32}$"}
  job: {label: job, enum: [nginx]}
diagnostics:
  - {name: greet, command: [echo, checking, "{host}"], auto: true}
  - {name: load, command: [uptime], auto: true}
  - {name: job, command: [echo, "{job}"], auto: true}
  - {name: by hand, command: [echo, manual]}
fixes:
  - {name: restart, command: [echo, restart, "{host}"]}
"""


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_telegram: FakeTelegram) -> Settings:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "nginx.yaml").write_text(NGINX_RUNBOOK)
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": db_url},
        # The embedded agent serves host web-1 (the alert's host), through the same WebSocket as any agent.
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
            {"name": "bob", "role": "operator", "telegram_id": BOB_ID},
            {"name": "carol", "role": "viewer", "telegram_id": CAROL_ID},
        ],
        policy={
            "roles": {
                "operator": [{"hosts": ["*"], "commands": ["echo *", "uptime"]}],
                "viewer": [{"hosts": ["*"], "commands": ["uptime"]}],
                "firstresponse": [{"hosts": ["*"], "commands": ["echo *"]}],
            }
        },
        memory={"runbooks_dir": runbooks, "first_response_role": "firstresponse"},
    )


class Controller:
    def __init__(self, services: Services, client: httpx.AsyncClient, api_token: str, ingest_token: str) -> None:
        self.services = services
        self.client = client
        self.api = {"Authorization": f"Bearer {api_token}"}
        self.ingest = {"Authorization": f"Bearer {ingest_token}", "Content-Type": "application/json"}


@pytest.fixture
async def controller(settings: Settings, clock: FakeClock) -> AsyncIterator[Controller]:
    async with live_controller(settings, clock) as live:
        ingest = await live.services.tokens.create(TokenKind.INGEST, "memory-test", now=clock())
        yield Controller(live.services, live.client, live.api_token, ingest)


def occurrence(starts_at: str, name: str = "DiskFull") -> bytes:
    """The captured Alertmanager payload, firing again: a new `startsAt` is a new occurrence (ADR 0002)."""
    body = json.loads(FIRING.read_text())
    alert = copy.deepcopy(body["alerts"][0])
    alert["startsAt"] = starts_at
    alert["labels"]["alertname"] = name
    alert["fingerprint"] = f"{name}-fp"
    body["alerts"] = [alert]
    return json.dumps(body).encode()


async def fire(ctl: Controller, starts_at: str, name: str = "DiskFull") -> None:
    body = occurrence(starts_at, name)
    response = await ctl.client.post("/api/v1/alerts/alertmanager", content=body, headers=ctl.ingest)
    assert response.status_code == 200, response.text


def buttons(message: StoredMessage) -> list[dict[str, str]]:
    markup: dict[str, Any] = message.reply_markup or {"inline_keyboard": [[]]}
    return list(markup["inline_keyboard"][0])


async def command_done(ctl: Controller, requester: str, count: int = 1) -> list[Any]:
    async def done() -> list[Any]:
        rows = [c for c in await list_commands(ctl.services.db) if c.requester == requester]
        return rows if len(rows) >= count and all(c.status in FINISHED for c in rows) else []

    return list(await eventually(done, timeout=30, what=f"{requester}'s command to finish"))


async def cli(settings: Settings, cwd: Path, *args: str) -> str:
    """`teleops ARGS` as a real process on the controller's database; its stdout (asserting exit 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    env["TELEOPS_DATABASE__URL"] = settings.database.url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "teleops", *args, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_recurring_alert_shows_last_time_and_runs_again_as_the_presser(
    controller: Controller, fake_telegram: FakeTelegram, clock: FakeClock, settings: Settings, tmp_path: Path
) -> None:
    ctl, fake = controller, fake_telegram
    await fire(ctl, "2026-11-25T09:03:47Z")
    first = (await eventually(lambda: fake.chat_messages(ALERT_CHAT), what="the first alert message"))[0]
    assert "time in" not in first.text  # nothing to remember yet
    assert [b["text"] for b in buttons(first)] == ["Ack", "Resolve", "Snooze 1h"]

    # alice answers with a (harmless stand-in) fix, notes it, resolves.
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "echo restarted-nginx", reply_to=first.message_id))
    [alices] = await command_done(ctl, "alice")
    assert alices.status == "succeeded"
    assert alices.exit_code == 0
    assert alices.incident_id == 1
    fake.push_update(
        fake.message_update(ALERT_CHAT, ALICE_ID, "/note nginx wedged, restart fixed it", reply_to=first.message_id)
    )
    await eventually(lambda: any("Note added" in m.text for m in fake.chat_messages(ALERT_CHAT)), what="the note")
    clock.advance(minutes=14)
    resolve = next(b["callback_data"] for b in buttons(first) if b["text"] == "Resolve")
    fake.push_update(fake.button_update(ALERT_CHAT, ALICE_ID, first.message_id, resolve))
    await eventually(lambda: "resolved by alice" in first.text, what="the resolution")

    # Two hours later it is back: a new incident, linked to the first.
    clock.advance(hours=2)
    await fire(ctl, "2026-11-25T11:20:00Z")
    second = await eventually(
        lambda: next((m for m in fake.chat_messages(ALERT_CHAT) if "time in" in m.text), None), what="the recurrence"
    )
    assert (await get_incident(ctl.services.db, 2)).predecessor_id == 1
    assert "2nd time in 30d" in second.text
    assert "Last time: #1" in second.text
    assert "handled by alice" in second.text
    assert "resolved by alice after 14m" in second.text
    assert "alice: echo restarted-nginx → exit 0 · restarted-nginx" in second.text
    assert "nginx wedged, restart fixed it" in second.text
    assert "Fix didn't stick: back 2h after #1 was fixed" in second.text
    again = [b for b in buttons(second) if b["text"].startswith("↻")]
    assert [b["text"] for b in again] == ["↻ echo restarted-nginx"]
    assert again[0]["callback_data"] == f"again:2:{alices.id}"
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons(second))

    # bob presses Run again: first a preview of exactly what runs where, nothing run yet.
    before = len(fake.chat_messages(ALERT_CHAT))
    fake.push_update(
        fake.button_update(ALERT_CHAT, BOB_ID, second.message_id, again[0]["callback_data"], username="bob")
    )
    preview = await eventually(
        lambda: next((m for m in fake.chat_messages(ALERT_CHAT)[before:] if "Run `" in m.text), None), what="preview"
    )
    assert "Run `echo restarted-nginx` on web-1?" in preview.text
    assert not [c for c in await list_commands(ctl.services.db) if c.requester == "bob"]
    confirm = next(b["callback_data"] for b in buttons(preview) if b["text"] == "▶ Run it")
    fake.push_update(fake.button_update(ALERT_CHAT, BOB_ID, preview.message_id, confirm, username="bob"))
    [bobs] = await command_done(ctl, "bob")
    assert (bobs.status, bobs.exit_code, bobs.argv, bobs.host, bobs.incident_id) == (
        "succeeded",
        0,
        ["echo", "restarted-nginx"],
        "web-1",
        2,
    )

    # A preview confirms once: pressing "Run it" again (a double tap) runs nothing more.
    fake.push_update(fake.button_update(ALERT_CHAT, BOB_ID, preview.message_id, confirm, username="bob"))
    await eventually(
        lambda: (
            fake.calls_of("answerCallbackQuery")
            and "Already confirmed" in str(fake.calls_of("answerCallbackQuery")[-1].params.get("text", ""))
        ),
        what="the second confirm's answer",
    )
    assert len([c for c in await list_commands(ctl.services.db) if c.requester == "bob"]) == 1

    # carol's role may not run echo: her own confirmed press is refused by the policy, and recorded.
    before = len(fake.chat_messages(ALERT_CHAT))
    fake.push_update(
        fake.button_update(ALERT_CHAT, CAROL_ID, second.message_id, again[0]["callback_data"], username="carol")
    )
    carols_preview = await eventually(
        lambda: next((m for m in fake.chat_messages(ALERT_CHAT)[before:] if "Run `" in m.text), None),
        what="carol's preview",
    )
    fake.push_update(fake.button_update(ALERT_CHAT, CAROL_ID, carols_preview.message_id, confirm, username="carol"))
    [carols] = await command_done(ctl, "carol")
    assert carols.status == "denied"
    await eventually(lambda: any("Command refused" in m.text for m in fake.chat_messages(ALERT_CHAT)), what="refusal")

    # A forged button (a command that never fixed this alert) runs nothing.
    fake.push_update(
        fake.button_update(ALERT_CHAT, BOB_ID, preview.message_id, f"again!:2:{bobs.id + 100}", username="bob")
    )
    await eventually(
        lambda: any("is not one that fixed an earlier occurrence" in m.text for m in fake.chat_messages(ALERT_CHAT)),
        what="the forged button's refusal",
    )
    assert len([c for c in await list_commands(ctl.services.db) if c.requester == "bob"]) == 1

    # /history in chat: in reply to the incident, its "last time"; with words, a search. (Dated by the
    # controller's clock, which the test moved ahead; the group's 20 messages/minute limit may delay answers.)
    sent = int(clock.now.timestamp())
    asked = fake.message_update(ALERT_CHAT, BOB_ID, "/history", username="bob", reply_to=second.message_id, date=sent)
    fake.push_update(asked)
    fake.push_update(fake.message_update(ALERT_CHAT, BOB_ID, "/history wedged nginx", username="bob", date=sent))
    await eventually(
        lambda: (
            len([m for m in fake.chat_messages(ALERT_CHAT) if m.text.startswith(("#2 DiskFull", "Scenarios"))]) == 2
        ),
        timeout=90,
        what="both /history answers",
    )
    texts = "\n".join(m.text for m in fake.chat_messages(ALERT_CHAT))
    assert "#2 DiskFull\n🔁 2nd time in 30d." in texts
    assert "Scenarios matching 'wedged nginx', best first:\n#1 DiskFull on web-1 (resolved," in texts

    # The same memory over REST, search and the postmortem export.
    history = (await ctl.client.get("/api/v1/incidents/2/history", headers=ctl.api)).json()
    assert history["times"] == 2
    assert history["fix_didnt_stick"] is True
    assert history["last"]["incident_id"] == 1
    assert history["last"]["ended_in_fix"] is True
    assert [c["argv"] for c in history["run_again"]] == [["echo", "restarted-nginx"]]
    found = (await ctl.client.get("/api/v1/scenarios", params={"q": "wedged"}, headers=ctl.api)).json()
    assert [hit["incident_id"] for hit in found["items"]] == [1]
    export = await ctl.client.get("/api/v1/incidents/1/export.md", headers=ctl.api)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/markdown")
    assert "`echo restarted-nginx` on web-1 → succeeded, exit 0" in export.text
    assert "nginx wedged, restart fixed it" in export.text
    assert "| alice |" in export.text

    # And on the web UI's incident page.
    assert await ctl.services.users.set_password("alice", "correct horse battery")
    async with httpx.AsyncClient(base_url=str(ctl.client.base_url), timeout=10) as browser:
        login = await browser.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        assert token is not None
        form = {"username": "alice", "password": "correct horse battery", "csrf_token": token.group(1)}
        await browser.post("/ui/login", data=form)
        page = await browser.get("/ui/incidents/2")
    assert page.status_code == 200
    section = page.text[page.text.index('id="last-time"') :]
    assert "2nd time in 30d" in section
    assert "Fix didn&#39;t stick" in section
    assert "<code>$ echo restarted-nginx</code> by alice · exit 0" in section

    # Once bob's run resolves #2 and the alert stays away, the CLI proposes it as a learned runbook fix.
    assert (await ctl.client.post("/api/v1/incidents/2/resolve", headers=ctl.api)).status_code == 200
    exported = await cli(settings, tmp_path, "incident", "export", "1", "--format", "md")
    assert exported.startswith("# #1 DiskFull on web-1")
    assert "`echo restarted-nginx` on web-1 → succeeded, exit 0" in exported
    proposal = await cli(settings, tmp_path, "runbook", "suggest", "DiskFull")
    runbook = parse_runbook(yaml.safe_load(proposal), where="proposal")
    assert [fix.argv for fix in runbook.fixes] == [("echo", "restarted-nginx")]
    assert "#2; by bob" in runbook.fixes[0].name
    assert not runbook.diagnostics


async def test_run_again_is_refused_once_the_incident_is_resolved(
    controller: Controller, fake_telegram: FakeTelegram
) -> None:
    ctl, fake = controller, fake_telegram
    await fire(ctl, "2026-11-25T09:03:47Z")
    first = (await eventually(lambda: fake.chat_messages(ALERT_CHAT), what="the alert message"))[0]
    fake.push_update(fake.message_update(ALERT_CHAT, ALICE_ID, "echo cleared-cache", reply_to=first.message_id))
    [alices] = await command_done(ctl, "alice")
    assert (await ctl.client.post("/api/v1/incidents/1/resolve", headers=ctl.api)).status_code == 200
    await fire(ctl, "2026-11-25T10:00:00Z")
    await eventually(lambda: any("time in" in m.text for m in fake.chat_messages(ALERT_CHAT)), what="the recurrence")
    assert (await ctl.client.post("/api/v1/incidents/2/resolve", headers=ctl.api)).status_code == 200
    fake.push_update(fake.button_update(ALERT_CHAT, ALICE_ID, first.message_id, f"again!:2:{alices.id}"))
    await eventually(
        lambda: any("#2 is already resolved; nothing was run" in m.text for m in fake.chat_messages(ALERT_CHAT)),
        what="the refusal",
    )
    assert len(await list_commands(ctl.services.db)) == 1


async def test_first_response_runs_auto_diagnostics_under_policy_and_attaches_the_output(
    controller: Controller, fake_telegram: FakeTelegram
) -> None:
    ctl, fake = controller, fake_telegram
    await fire(ctl, "2026-11-25T09:03:47Z", name="NginxDown")
    message = (await eventually(lambda: fake.chat_messages(ALERT_CHAT), what="the alert message"))[0]
    assert "📖 Runbook: nginx stopped answering" in message.text
    assert "🩺 First response: running echo checking web-1 (output on the timeline)." in message.text
    assert "🩺 job: unavailable (label 'job' is not one of nginx)." in message.text  # job=node fails the enum
    assert "🔧 Suggested fix: echo restart web-1" in message.text
    commands = await command_done(ctl, "teleops-firstresponse", count=2)
    outcome = {tuple(c.argv): (c.status, c.output.strip()) for c in commands}
    assert outcome[("echo", "checking", "web-1")] == ("succeeded", "checking web-1")
    assert outcome[("uptime",)][0] == "denied"  # the principal's role allows only echo: policy still applies
    assert ("echo", "manual") not in outcome  # not auto: never run on arrival
    assert len(commands) == 2

    async def timeline_has_output() -> bool:
        events = (await get_incident(ctl.services.db, 1)).timeline
        return any(e.kind == "command.finished" and "checking web-1" in e.data["output_excerpt"] for e in events)

    await eventually(timeline_has_output, what="the diagnostic's output on the timeline")

    async def notes_of_incident() -> list[TimelineEvent]:
        return [e for e in (await get_incident(ctl.services.db, 1)).timeline if e.kind == "note"]

    # The `job` step comes after `load`: its note may land after both commands ended, so wait for it.
    notes = await eventually(notes_of_incident, what="the first response's note for the skipped step")
    assert [n.actor for n in notes] == ["teleops-firstresponse"]
    assert "skipped 'job'" in notes[0].data["text"]
