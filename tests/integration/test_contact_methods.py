"""Contact methods through Apprise (issue #20.2), against real local servers: an SMTP server (aiosmtpd) and a JSON
webhook receiver (aiohttp), both on loopback ports, driven through a real controller app (its lifespan, its outbox
worker for the `contact` platform, its SQLite database).

What is checked: a page queued for contact `alice/email` arrives as an email whose subject is the incident's name; a
shared `json://` contact receives title and body; a webhook answering 500 and a stopped SMTP server leave the row
queued with growing attempts, and it goes once they recover; a key no longer configured fails the row for good with
the reason; an edit of a sent contact message sends nothing; no URL secret reaches the row's error or the log.
"""

from __future__ import annotations

import email
import email.policy
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from teleops.chat.service import ChatService
from teleops.config import Settings
from teleops.domain.message import Message
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.outbox_queue import OutboxRow, OutboxStatus, enqueue_edit
from tests.integration.servers import free_port
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

HOOK_TOKEN = "hook-token-5be71c04"  # the webhook's secret path segment: never in a row's error or the log


@dataclass
class SmtpSink:
    """A real SMTP server on a loopback port; `stop`/`start` take it away and bring it back on the same port."""

    port: int = field(default_factory=free_port)
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    _controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        self.messages.append(email.message_from_bytes(content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def url(self) -> str:
        # mailto:// (not mailtos://) is plain SMTP with no STARTTLS: Apprise's "insecure" mode, right for loopback.
        return f"mailto://127.0.0.1:{self.port}?from=teleops@example.com&to=alice@example.com"


@dataclass
class Webhook:
    """A real HTTP server on a loopback port that keeps what Apprise's json:// posts and answers `status`."""

    port: int = field(default_factory=free_port)
    status: int = 200
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    _runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.status != 200:
            return web.Response(status=self.status, text="not now")
        self.posts.append({"path": request.path, "json": await request.json()})
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hooks/{HOOK_TOKEN}"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    await hook.start()
    yield hook
    await hook.stop()


def _settings(tmp_path: Path, db_url: str, smtp: SmtpSink, webhook: Webhook) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        database={"url": db_url},
        local_agent={"enabled": False},
        users=[{"name": "alice", "contacts": [{"name": "email", "url": smtp.url}]}],
        oncall={"contacts": [{"name": "ops-hook", "url": webhook.url}]},
        contacts={"notify_timeout": "5s", "min_interval": "0s"},
    )


@pytest.fixture
async def chat(tmp_path: Path, db_url: str, smtp: SmtpSink, webhook: Webhook) -> AsyncIterator[ChatService]:
    app = create_app(_settings(tmp_path, db_url, smtp, webhook), clock=lambda: datetime.now(UTC))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        yield services.chat


def _page(name: str = "DiskFull on web-1") -> Message:
    return Message(title=name, severity="critical", host="web-1", body="/var is 97% full", status="#7 · open")


async def _row(chat: ChatService, row_id: int) -> OutboxRow:
    row = await chat.outbox.get(row_id)
    assert row is not None
    return row


def _last_error(db_path: Path, row_id: int) -> str:
    with sqlite3.connect(db_path) as conn:
        (error,) = conn.execute("SELECT last_error FROM outbox WHERE id = ?", (row_id,)).fetchone()
    return str(error or "")


async def test_email_contact_receives_the_page_through_the_outbox(chat: ChatService, smtp: SmtpSink) -> None:
    row_id = await chat.conversation.post("contact", "alice/email", _page())
    row = await eventually(lambda: _sent(chat, row_id), what="the email page to be sent", timeout=30)
    assert row.attempts == 1
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert "DiskFull on web-1" in str(mail["Subject"])
    assert mail["To"] == "alice@example.com"
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    content = text.get_content()
    assert "host: web-1" in content
    assert "/var is 97% full" in content


async def test_json_webhook_contact_receives_title_and_body(chat: ChatService, webhook: Webhook) -> None:
    row_id = await chat.conversation.post("contact", "ops-hook", _page("HighLoad on db-2"))
    await eventually(lambda: _sent(chat, row_id), what="the webhook page to be sent", timeout=30)
    assert len(webhook.posts) == 1
    health = {h.platform: h for h in await chat.input_health()}
    assert not health["contact"].watched  # no input, so never "stalled" in /readyz
    assert not health["contact"].stalled
    post = webhook.posts[0]
    assert post["path"] == f"/hooks/{HOOK_TOKEN}"
    assert "HighLoad on db-2" in post["json"]["title"]
    assert "/var is 97% full" in post["json"]["message"]


async def test_webhook_500_retries_until_it_recovers(
    chat: ChatService, webhook: Webhook, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.status = 500
    row_id = await chat.conversation.post("contact", "ops-hook", _page())
    row = await eventually(lambda: _attempted(chat, row_id, 2), what="two failed attempts", timeout=30)
    assert row.platform_message_id is None  # still queued: nothing is lost while the receiver is down
    assert webhook.posts == []
    error = _last_error(_db_path(db_url), row_id)
    assert "contact ops-hook (json://) failed" in error
    assert "500" in error
    assert HOOK_TOKEN not in error

    webhook.status = 200
    sent = await eventually(lambda: _sent(chat, row_id), what="the page once the webhook recovers", timeout=30)
    assert sent.attempts >= 3
    assert len(webhook.posts) == 1
    assert HOOK_TOKEN not in caplog.text


async def test_stopped_smtp_server_retries_until_it_is_back(chat: ChatService, smtp: SmtpSink, db_url: str) -> None:
    smtp.stop()
    row_id = await chat.conversation.post("contact", "alice/email", _page())
    await eventually(lambda: _attempted(chat, row_id, 2), what="two failed attempts", timeout=30)
    assert smtp.messages == []
    assert "contact alice/email (mailto://) failed" in _last_error(_db_path(db_url), row_id)

    smtp.start()
    await eventually(lambda: _sent(chat, row_id), what="the email once the server is back", timeout=30)
    assert len(smtp.messages) == 1


async def test_unknown_contact_key_fails_the_row_with_the_reason(
    chat: ChatService, smtp: SmtpSink, db_url: str
) -> None:
    row_id = await chat.conversation.post("contact", "alice/pager", _page())  # removed from the config since
    row = await eventually(lambda: _failed(chat, row_id), what="the row to be refused", timeout=30)
    assert row.status == OutboxStatus.FAILED
    assert "contact alice/pager is not configured" in _last_error(_db_path(db_url), row_id)
    # The next row of another contact is not held up by it.
    other = await chat.conversation.post("contact", "alice/email", _page())
    await eventually(lambda: _sent(chat, other), what="the next email", timeout=30)


async def test_edit_of_a_contact_message_sends_nothing(chat: ChatService, webhook: Webhook) -> None:
    row_id = await chat.conversation.post("contact", "ops-hook", _page())
    await eventually(lambda: _sent(chat, row_id), what="the page", timeout=30)

    def edit(conn: Any) -> int | None:
        edited = _page().to_json()
        edited["status"] = "#7 · acknowledged by bob"
        return enqueue_edit(conn, ref_id=row_id, payload={"message": edited}, now=datetime.now(UTC))

    edit_id = await chat.db.write(edit)
    assert edit_id is not None
    chat.wake()
    await eventually(lambda: _sent(chat, edit_id), what="the edit to be done", timeout=30)
    assert len(webhook.posts) == 1
    assert webhook.attempts == 1


def _db_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite+aiosqlite:///"))


async def _sent(chat: ChatService, row_id: int) -> OutboxRow | None:
    row = await _row(chat, row_id)
    return row if row.status == OutboxStatus.SENT else None


async def _failed(chat: ChatService, row_id: int) -> OutboxRow | None:
    row = await _row(chat, row_id)
    return row if row.status == OutboxStatus.FAILED else None


async def _attempted(chat: ChatService, row_id: int, attempts: int) -> OutboxRow | None:
    """The row once `attempts` deliveries of it failed and it waits, queued, for the next one."""
    row = await _row(chat, row_id)
    return row if row.attempts >= attempts and row.status == OutboxStatus.PENDING else None
