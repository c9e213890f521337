"""The console WebSocket: who may connect, what it pushes, what typed text and button presses become."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from tests.settings import settings_with

from teleops.chat.access import CODE_PROMPT
from teleops.chat.base import EventKind, InboundEvent
from teleops.chat.console.gateway import CONSOLE_CHAT_ID, ConsoleGateway
from teleops.chat.render import render
from teleops.config import Settings
from teleops.domain.message import Button, Message
from teleops.server.app import create_app
from teleops.store.tokens import TokenKind

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T = TypeVar("T")

ORIGIN = {"origin": "http://testserver"}
PASSWORD = "correct horse battery"


def on_loop(client: TestClient, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `fn(*args)` on the app's event loop (the client's portal, open while the client is)."""
    assert client.portal is not None, "use the client inside its `with` block"
    return client.portal.call(fn, *args)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    # About the console, not sign-in: the admin logs in with a password (a second factor is asked of the enrolled).
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        twofactor={"web_signin": "enrolled"},
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        on_loop(client, app.state.services.users.set_password, "admin", PASSWORD)
        yield client


def _login(client: TestClient) -> None:
    page = client.get("/ui/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    response = client.post(
        "/ui/login",
        data={"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303


def _gateway(client: TestClient) -> ConsoleGateway:
    gateway: ConsoleGateway = client.app.state.console_gateway  # type: ignore[attr-defined]
    return gateway


def test_unauthenticated_socket_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ui/console/ws", headers=ORIGIN):
        pass
    assert refused.value.code == 1008


def test_a_session_that_must_enrol_a_second_factor_first_is_refused(tmp_path: Path, db_url: str) -> None:
    strict = settings_with(data_dir=tmp_path / "strict", database={"url": db_url}, local_agent={"enabled": False})
    app = create_app(strict)  # the default: admins (whose rules ask for a code) enrol before anything else
    with TestClient(app, base_url="http://testserver") as strict_client:
        on_loop(strict_client, app.state.services.users.set_password, "admin", PASSWORD)
        _login(strict_client)
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            strict_client.websocket_connect("/ui/console/ws", headers=ORIGIN) as socket,
        ):
            socket.receive_json()
    assert refused.value.code == 1008


def test_cross_origin_socket_is_refused_even_with_a_session(client: TestClient) -> None:
    _login(client)
    for origin in ("http://evil.example", "null", "http://testserver.evil.example"):
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ui/console/ws", headers={"origin": origin}),
        ):
            pass
        assert refused.value.code == 1008
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ui/console/ws"):  # no Origin at all
        pass


def test_forged_cookie_socket_is_refused(client: TestClient) -> None:
    client.cookies.set("teleops_session", "v1.eyJ1IjogImFkbWluIn0.AAAA")
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ui/console/ws", headers=ORIGIN):
        pass


def test_logged_in_browser_gets_history_then_live_messages(client: TestClient) -> None:
    _login(client)
    gateway = _gateway(client)
    capabilities = gateway.capabilities
    first = on_loop(
        client, gateway.send, CONSOLE_CHAT_ID, render(Message(title="DiskFull", severity="critical"), capabilities)
    )
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        history = ws.receive_json()
        assert history["type"] == "history"
        assert history["user"] == "admin"
        assert [m["id"] for m in history["messages"]] == [int(first)]
        assert "CRITICAL" in history["messages"][0]["text"]
        message = Message(title="<b>Load</b>", severity="warning", buttons=(Button("Ack", "ack:1"),))
        second = on_loop(client, gateway.send, CONSOLE_CHAT_ID, render(message, capabilities))
        pushed = ws.receive_json()
        assert pushed["type"] == "message"
        assert pushed["message"]["id"] == int(second)
        assert "<b>Load</b>" in pushed["message"]["text"]  # plain text; the page sets it with textContent
        assert pushed["message"]["buttons"] == [{"label": "Ack", "data": "ack:1"}]
        edited = Message(title="Load", status="acknowledged by admin")
        on_loop(client, gateway.edit, CONSOLE_CHAT_ID, second, render(edited, capabilities))
        edit = ws.receive_json()
        assert edit["type"] == "edit"
        assert edit["message"]["id"] == int(second)
        assert "acknowledged by admin" in edit["message"]["text"]


def test_typed_reply_and_button_press_become_inbound_events(client: TestClient) -> None:
    _login(client)
    gateway = _gateway(client)
    events: list[InboundEvent] = []

    async def on_event(event: InboundEvent) -> None:
        events.append(event)

    on_loop(client, gateway.start, on_event)
    alert = Message(title="DiskFull", buttons=(Button("Ack", "ack:7"),))
    alert_id = on_loop(client, gateway.send, CONSOLE_CHAT_ID, render(alert, gateway.capabilities))
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        ws.receive_json()  # history
        ws.send_json({"type": "text", "text": "df -h", "reply_to": int(alert_id)})
        echoed: dict[str, Any] = ws.receive_json()
        assert echoed["type"] == "message"
        assert echoed["message"]["author"] == "admin"
        assert echoed["message"]["reply_to"] == int(alert_id)
        ws.send_json({"type": "button", "message_id": int(alert_id), "data": "ack:7"})
        ws.send_json({"type": "button", "message_id": int(alert_id), "data": "resolve:7"})  # not on that message
        notice = ws.receive_json()
        assert notice == {"type": "notice", "text": "that button is no longer there; reload the page"}
    typed, pressed = events
    assert (typed.platform, typed.kind, typed.chat_id, typed.user_id) == (
        "console",
        EventKind.MESSAGE,
        "console",
        "admin",
    )
    assert typed.text == "df -h"
    assert typed.reply_to == alert_id
    assert (pressed.kind, pressed.button_data, pressed.message_id, pressed.user_id) == (
        EventKind.BUTTON,
        "ack:7",
        alert_id,
        "admin",
    )
    assert pressed.callback_id


def _next_message(ws: Any, *, author: str | None) -> dict[str, Any]:
    """The next new message of `author` (None: TeleOps) the socket pushes, skipping edits and notices."""
    while True:
        frame: dict[str, Any] = ws.receive_json()
        message: dict[str, Any] = frame.get("message", {})
        if frame["type"] == "message" and message["author"] == author:
            return message


def test_reply_is_offered_only_where_it_does_something_and_says_what(client: TestClient) -> None:
    """chat/conversation.py: a reply to a message about an incident runs on that incident's host, a reply to a code
    prompt is the code, and a reply to anything else (a /help answer, a storm summary) runs nothing."""
    _login(client)
    services = client.app.state.services  # type: ignore[attr-defined]
    ingest = on_loop(client, lambda: services.tokens.create(TokenKind.INGEST, "sender", now=services.clock()))
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        ws.receive_json()  # history
        alert = {"summary": "Disk / is 97% full", "host": "web-1", "check": "DiskFull", "severity": "critical"}
        fired = client.post("/api/v1/alerts/generic", json=alert, headers={"Authorization": f"Bearer {ingest}"})
        incident_id = fired.json()["results"][0]["incident_id"]
        about_incident = _next_message(ws, author=None)
        assert "DiskFull" in about_incident["text"]
        assert (about_incident["reply"], about_incident["incident_id"]) == ("incident", incident_id)

        ws.send_json({"type": "text", "text": "/help"})
        assert _next_message(ws, author="admin")["reply"] is None  # people's own messages are never replied to
        help_answer = _next_message(ws, author=None)
        assert "TeleOps commands" in help_answer["text"]
        assert (help_answer["reply"], help_answer["incident_id"]) == (None, None)

        gateway = _gateway(client)
        prompt = render(Message(body=f"{CODE_PROMPT} (within 5 min) to run `df -h` on web-1."), gateway.capabilities)
        on_loop(client, gateway.send, CONSOLE_CHAT_ID, prompt)
        assert _next_message(ws, author=None)["reply"] == "code"
    after_reload = [m["reply"] for m in _history(client) if m["author"] is None]
    assert after_reload == ["incident", None, "code"]


def _history(client: TestClient) -> list[dict[str, Any]]:
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        frame: dict[str, Any] = ws.receive_json()
    assert frame["type"] == "history"
    messages: list[dict[str, Any]] = frame["messages"]
    return messages


def test_reply_to_a_missing_message_and_junk_frames_get_a_notice(client: TestClient) -> None:
    _login(client)
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        ws.receive_json()
        ws.send_json({"type": "text", "text": "uptime", "reply_to": 999})
        assert "does not exist" in ws.receive_json()["text"]
        ws.send_text("{not json")
        assert ws.receive_json()["type"] == "notice"
        ws.send_json({"type": "text", "text": "x" * 5000})
        assert "too long" in ws.receive_json()["text"]


def test_connecting_links_the_console_account_to_the_logged_in_user(client: TestClient) -> None:
    from teleops.store.identities import IdentityStore

    identities = IdentityStore(client.app.state.services.db)  # type: ignore[attr-defined]
    assert on_loop(client, identities.user_of, "console", "admin") is None
    _login(client)
    for _ in range(2):  # a second tab (or reload) finds the link and changes nothing
        with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
            assert ws.receive_json()["type"] == "history"
    assert on_loop(client, identities.user_of, "console", "admin") == "admin"


def test_gateway_refuses_other_chats_and_unknown_messages(client: TestClient) -> None:
    from teleops.chat.base import DeliveryRefused

    gateway = _gateway(client)
    rendered = render(Message(title="x"), gateway.capabilities)
    with pytest.raises(DeliveryRefused, match="one chat"):
        on_loop(client, gateway.send, "1001", rendered)
    with pytest.raises(DeliveryRefused, match="does not exist"):
        on_loop(client, gateway.edit, CONSOLE_CHAT_ID, "424242", rendered)


def test_long_output_file_reaches_the_browser_as_text(client: TestClient) -> None:
    _login(client)
    gateway = _gateway(client)
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        ws.receive_json()
        content = b"line\n" * 10_000 + b"\x1b[2Jtail \xff"
        on_loop(client, gateway.send_file, CONSOLE_CHAT_ID, "output-7.txt", content)
        frame = ws.receive_json()
    assert frame["message"]["file"]["name"] == "output-7.txt"
    assert frame["message"]["file"]["bytes"] == len(content)
    assert frame["message"]["file"]["text"].endswith("\\x1b[2Jtail \ufffd")  # ANSI shown, not obeyed


def test_a_tab_that_stops_reading_is_dropped_not_buffered_forever(client: TestClient) -> None:
    gateway = _gateway(client)
    slow = gateway.subscribe("admin")
    rendered = render(Message(title="storm"), gateway.capabilities)
    for _ in range(600):  # more than a tab's queue holds
        on_loop(client, gateway.send, CONSOLE_CHAT_ID, rendered)
    assert slow.closed
    assert gateway.connected == 0
    assert slow.queue.get_nowait() == {"type": "closed"}
