"""Issue #19.1 on the web console: a frame that is not a console message is reported (logged, audited,
counted), the browser is told, and the same session goes on being answered."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Connection
from starlette.testclient import TestClient

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.store.audit import iter_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T = TypeVar("T")
ORIGIN = {"origin": "http://testserver"}
PASSWORD = "correct horse battery"


def on_loop(client: TestClient, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    assert client.portal is not None
    return client.portal.call(fn, *args)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as client:
        on_loop(client, app.state.services.users.set_password, "admin", PASSWORD)
        page = client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        form = {"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)}
        assert client.post("/ui/login", data=form, follow_redirects=False).status_code == 303
        yield client


def _frames_until(ws: Any, wanted: Callable[[dict[str, Any]], bool], limit: int = 20) -> dict[str, Any]:
    for _ in range(limit):
        frame: dict[str, Any] = ws.receive_json()
        if wanted(frame):
            return frame
    raise AssertionError("the expected frame did not come")


def test_a_frame_that_is_not_a_message_is_reported_and_the_session_goes_on(client: TestClient) -> None:
    with client.websocket_connect("/ui/console/ws", headers=ORIGIN) as ws:
        ws.receive_json()  # the history
        ws.send_text('{"type": "teleport", "to": "mars"}')
        notice = _frames_until(ws, lambda f: f["type"] == "notice")
        assert "ignored" in notice["text"]
        ws.send_json({"type": "text", "text": "/whoami"})
        answer = _frames_until(
            ws, lambda f: f["type"] == "message" and "linked to TeleOps user" in f["message"]["text"]
        )
        assert "admin" in answer["message"]["text"]

    def unhandled(conn: Connection) -> list[dict[str, Any]]:
        return [dict(e.data) for e in iter_events(conn) if e.action == "chat.update_unhandled"]

    app: Any = client.app
    records = on_loop(client, app.state.services.db.run_in_transaction, unhandled)
    assert [(r["platform"], r["update_id"], r["reason"]) for r in records] == [
        ("console", "console-frame-from-admin", "malformed_envelope")
    ]
    assert "teleport" in records[0]["excerpt"]
    samples = [
        s
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "teleops_chat_updates_unhandled_total"
    ]
    assert [(s.labels, s.value) for s in samples] == [({"platform": "console", "reason": "malformed_envelope"}, 1.0)]
