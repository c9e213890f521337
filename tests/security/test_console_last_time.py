"""Scenario memory's "last time" lines and Run-again buttons in the web console, under the read rule (issue #18):
a real controller on loopback with its local agent "web-1", three people logged in over real HTTP, each with a
real WebSocket to /ui/console/ws.

An alert fires on web-1; alice (operator, her policy covers web-*) answers it from the console with a command
and it is resolved. The alert comes back: its announcement quotes what alice ran ("last time") and offers to run
it again. ada (admin) and alice see the command line and the Run-again button; bob (a viewer, whose policy covers
no host) gets the same announcement with that line saying "[command not shown to you]" (the wording of the
incident page and `/history`) and no Run-again button, live and in the history he loads later, and a forged press
of that button is refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import websockets
from tests.conftest import FakeClock
from tests.fakes.telegram import free_port
from tests.live_controller import LiveController, live_controller
from tests.security.test_console_read_rule import PASSWORD, POLICY, Tab, login
from tests.settings import settings_with

from teleops.config import Settings
from teleops.memory.last_time import WITHHELD_COMMAND
from teleops.store.tokens import TokenKind

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

MARK = "lasttimemark7q"  # in alice's command line and its output
ALERT = {"summary": "Disk / is full", "host": "web-1", "check": "LastTimeRead", "severity": "critical"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}"},
        database={"url": db_url},
        local_agent={"enabled": True, "name": "web-1"},
        users=[
            {"name": "alice", "role": "operator"},
            {"name": "bob", "role": "viewer"},
            {"name": "ada", "role": "admin"},
        ],
        policy={"roles": POLICY},
        twofactor={"web_signin": "enrolled"},  # about reading, not sign-in: people log in with a password
    )


@pytest.fixture
async def controller(settings: Settings, clock: FakeClock) -> AsyncIterator[LiveController]:
    async with live_controller(settings, clock, timeout_s=30) as live:
        for name in ("alice", "bob", "ada"):
            assert await live.services.users.set_password(name, PASSWORD)
        yield live


async def open_tab(settings: Settings, name: str) -> Tab:
    listen = settings.server.listen
    socket = await websockets.connect(
        f"ws://{listen}/ui/console/ws",
        origin=websockets.Origin(f"http://{listen}"),
        additional_headers={"Cookie": await login(f"http://{listen}", name)},
        open_timeout=20,
    )
    tab = Tab(name, socket)
    await tab.until(lambda f: f["type"] == "history", "the history")
    return tab


@pytest.fixture
async def tabs(controller: LiveController, settings: Settings) -> AsyncIterator[dict[str, Tab]]:
    opened: dict[str, Tab] = {}
    try:
        for name in ("alice", "bob", "ada"):
            opened[name] = await open_tab(settings, name)
        yield opened
    finally:
        for tab in opened.values():
            await tab.socket.close()


async def fire(controller: LiveController, occurrence: int) -> None:
    services = controller.services
    token = await services.tokens.create(TokenKind.INGEST, f"last-time-{occurrence}", now=services.clock())
    response = await controller.client.post(
        "/api/v1/alerts/generic", json=ALERT, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text


def announcement(frame: dict[str, Any]) -> bool:
    message = frame.get("message") or {}
    return frame["type"] == "message" and message.get("author") is None and "Disk / is full" in message["text"]


def recurrence(frame: dict[str, Any]) -> bool:
    return announcement(frame) and "Last time:" in frame["message"]["text"]


def run_again(message: dict[str, Any]) -> list[str]:
    return [b["data"] for b in message["buttons"] if b["data"].startswith("again:")]


async def test_last_time_lines_and_run_again_are_withheld_from_who_may_not_read_the_command(
    tabs: dict[str, Tab], controller: LiveController, settings: Settings
) -> None:
    alice, bob, ada = tabs["alice"], tabs["bob"], tabs["ada"]
    await fire(controller, 1)
    first = (await alice.until(announcement, "the first announcement"))["message"]
    incident_id = first["incident_id"]
    await alice.say(f"echo {MARK}", reply_to=first["id"])  # a reply to the incident runs on its host
    await alice.until(
        lambda f: MARK in f.get("message", {}).get("text", "") and "succeeded" in f["message"]["text"],
        "alice's command to succeed",
    )
    resolved = await controller.client.post(f"/api/v1/incidents/{incident_id}/resolve", headers=controller.api)
    assert resolved.status_code == 200, resolved.text

    await fire(controller, 2)  # it comes back: a new incident whose announcement quotes what alice ran
    for tab in (alice, ada):
        again = (await tab.until(recurrence, f"the recurrence in {tab.name}'s tab"))["message"]
        assert f"✔ alice: echo {MARK} → exit 0" in again["text"], again["text"]
        assert len(run_again(again)) == 1, again["buttons"]
        assert "quotes_withheld" not in again
    seen = (await bob.until(recurrence, "the recurrence in bob's tab"))["message"]
    assert f"✔ alice: {WITHHELD_COMMAND} on web-1 → exit 0" in seen["text"], seen["text"]
    assert "Ask alice or an admin" in seen["quotes_withheld"]
    assert "withheld" not in seen  # the announcement itself is everyone's: only the quote is withheld
    assert run_again(seen) == []
    assert [b["label"] for b in seen["buttons"]] == ["Ack", "Resolve", "Snooze 1h"]  # the rest stays
    assert MARK not in bob.text(), "bob received alice's command line or output"

    # A press of the Run-again button bob was not shown (data copied from ada's view) is refused.
    button = run_again((await ada.until(recurrence, "ada's recurrence"))["message"])[0]
    await bob.socket.send(json.dumps({"type": "button", "message_id": seen["id"], "data": button}))
    notice = await bob.until(lambda f: f["type"] == "notice", "the refusal of the forged press")
    assert notice["text"] == "that button is no longer there; reload the page"

    # The history loaded later applies the same rule.
    for name, reads in (("bob", False), ("ada", True), ("alice", True)):
        tab = await open_tab(settings, name)
        try:
            history = tab.frames[0]
            recurred = [m for m in history["messages"] if "Last time:" in m["text"]]
            assert len(recurred) == 1, (name, history)
            assert (MARK in json.dumps(history)) is reads, name
            assert (WITHHELD_COMMAND in recurred[0]["text"]) is not reads, name
            assert bool(run_again(recurred[0])) is reads, name
        finally:
            await tab.socket.close()
    assert MARK not in bob.text()
