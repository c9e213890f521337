"""The web console's live room under the read rule (issue #18, chat/console/read_rule.py), end to end: a real
controller on loopback with its local agent "web-1", three people logged in over real HTTP, each with a real
WebSocket to /ui/console/ws.

alice (operator, her policy covers web-*) runs a command from the console. ada (admin) sees her typed line and
the command's output live; bob (a viewer, whose policy covers no host) gets the messages' places with one line
each ("a command by alice on web-1 — not yours to read") and never the line or the output, live or in the
history he loads later. The incident's own announcement stays readable by everyone.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tests.conftest import FakeClock
from tests.fakes.telegram import free_port
from tests.live_controller import LiveController, live_controller
from tests.settings import settings_with

from teleops.config import Settings
from teleops.store.tokens import TokenKind

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PASSWORD = "correct horse battery"
MARK = "consolemark4k"  # in the command line and in its output
POLICY: dict[str, Any] = {
    "operator": [{"hosts": ["web-*"], "commands": ["echo *"], "require_2fa": False}],
    "viewer": [{"hosts": ["nowhere-*"], "commands": ["uptime"]}],
    "admin": [{"hosts": ["*"], "commands": ["*"]}],
}
WITHHELD = "a command by alice on web-1 — not yours to read"


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


@dataclass
class Tab:
    """One person's console WebSocket and every frame it received."""

    name: str
    socket: Any
    frames: list[dict[str, Any]] = field(default_factory=list)

    async def until(self, found: Any, what: str) -> dict[str, Any]:
        """Read frames until `found(frame)` is true for one; returns it (a 20 s socket timeout bounds the wait)."""
        for frame in self.frames:
            if found(frame):
                return frame
        while True:
            frame = json.loads(await self.socket.recv(decode=True))
            self.frames.append(frame)
            if found(frame):
                return dict(frame)
            assert frame.get("type") != "closed", f"{self.name}'s tab was closed waiting for {what}"

    async def say(self, text: str, reply_to: int | None = None) -> None:
        frame: dict[str, Any] = {"type": "text", "text": text}
        if reply_to is not None:
            frame["reply_to"] = reply_to
        await self.socket.send(json.dumps(frame))

    def text(self) -> str:
        return json.dumps(self.frames, ensure_ascii=False)


async def login(base: str, name: str) -> str:
    """Log `name` in over real HTTP; returns the Cookie header of the session."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        page = await client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        response = await client.post(
            "/ui/login", data={"username": name, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert response.status_code == 303, response.text
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


@pytest.fixture
async def tabs(controller: LiveController, settings: Settings) -> AsyncIterator[dict[str, Tab]]:
    listen = settings.server.listen
    opened: dict[str, Tab] = {}
    try:
        for name in ("alice", "bob", "ada"):
            cookie = await login(f"http://{listen}", name)
            socket = await websockets.connect(
                f"ws://{listen}/ui/console/ws",
                origin=websockets.Origin(f"http://{listen}"),
                additional_headers={"Cookie": cookie},
                open_timeout=20,
            )
            opened[name] = Tab(name, socket)
            history = await opened[name].until(lambda f: f["type"] == "history", "the history")
            assert history["user"] == name
        yield opened
    finally:
        for tab in opened.values():
            await tab.socket.close()


def _is_final(frame: dict[str, Any]) -> bool:
    message = frame.get("message") or {}
    return frame["type"] in ("message", "edit") and MARK in message.get("text", "") and "succeeded" in message["text"]


async def test_a_command_in_the_console_is_shown_live_only_to_who_may_read_it(
    tabs: dict[str, Tab], controller: LiveController, settings: Settings
) -> None:
    alice, bob, ada = tabs["alice"], tabs["bob"], tabs["ada"]
    await alice.say(f"/run web-1 echo {MARK}")
    final = await alice.until(_is_final, "the command's result in alice's tab")
    result_id = final["message"]["id"]
    line = await alice.until(lambda f: f.get("message", {}).get("author") == "alice", "alice's own line")
    assert MARK in line["message"]["text"]
    await ada.until(_is_final, "the command's result in the admin's tab")

    # Everything published before ada's next line has reached every tab (one publish at a time, in order).
    await ada.say("sentinel-after-the-command")
    for tab in (alice, bob, ada):
        await tab.until(lambda f: "sentinel-after-the-command" in f.get("message", {}).get("text", ""), "sentinel")

    assert MARK not in bob.text(), "bob (viewer) received the command's line or output live"
    about_result = [f["message"] for f in bob.frames if f.get("message", {}).get("id") == result_id]
    assert about_result, "bob's tab was not told the result's place in the room"
    assert all(m["text"] == WITHHELD for m in about_result), about_result
    assert all("Ask alice or an admin" in m["withheld"] for m in about_result)
    about_line = [f["message"] for f in bob.frames if f.get("message", {}).get("id") == line["message"]["id"]]
    assert about_line
    assert about_line[-1]["text"] == WITHHELD  # tagged with its command once the result answered it
    assert all(m["buttons"] == [] and "file" not in m for m in about_result + about_line)

    # The history bob (and ada) load later applies the same rule.
    await bob.socket.close()
    listen = settings.server.listen
    for name, shows in (("bob", False), ("ada", True), ("alice", True)):
        cookie = await login(f"http://{listen}", name)
        async with websockets.connect(
            f"ws://{listen}/ui/console/ws",
            origin=websockets.Origin(f"http://{listen}"),
            additional_headers={"Cookie": cookie},
            open_timeout=20,
        ) as socket:
            history = json.loads(await socket.recv(decode=True))
        assert history["type"] == "history"
        texts = {m["id"]: m["text"] for m in history["messages"]}
        assert (MARK in json.dumps(history)) is shows, (name, history)
        assert (texts[result_id] == WITHHELD) is not shows, name
        assert (texts[line["message"]["id"]] == WITHHELD) is not shows, name


async def test_an_incident_announcement_reaches_every_reader(tabs: dict[str, Tab], controller: LiveController) -> None:
    alert = {"summary": "Disk / is full", "host": "web-1", "check": "ConsoleRead", "severity": "critical"}
    services = controller.services
    token = await services.tokens.create(TokenKind.INGEST, "console-read", now=services.clock())
    response = await controller.client.post(
        "/api/v1/alerts/generic", json=alert, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    for tab in tabs.values():
        frame = await tab.until(lambda f: "Disk / is full" in f.get("message", {}).get("text", ""), "the alert")
        assert "withheld" not in frame["message"]
        assert frame["message"]["reply"] == "incident"
