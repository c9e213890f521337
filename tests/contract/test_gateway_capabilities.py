"""Every gateway against one suite: what its Capabilities promise, it does (GoAlert-style typeinfo).

Add a platform by adding a factory to GATEWAYS; the suite runs unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from teleops.chat.base import Gateway, InboundEvent
from teleops.chat.contact import ContactGateway
from teleops.chat.render import render
from teleops.chat.slack import SlackGateway
from teleops.chat.telegram import TelegramGateway
from teleops.domain.message import Button, CodeBlock, Message
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integration.servers import free_port


@asynccontextmanager
async def telegram_gateway() -> AsyncIterator[tuple[Gateway, str]]:
    fake = FakeTelegram()
    await fake.start()
    gateway = TelegramGateway(
        fake.token, allowed_chats=[-100], clock=lambda: datetime.now(UTC), base_url=fake.base_url, mode="webhook"
    )

    async def ignore(_event: InboundEvent) -> None:
        return None

    await gateway.start(ignore)
    try:
        yield gateway, "-100"
    finally:
        await gateway.stop()
        await fake.stop()


@asynccontextmanager
async def slack_gateway() -> AsyncIterator[tuple[Gateway, str]]:
    fake = FakeSlack()
    await fake.start()
    gateway = SlackGateway(
        fake.bot_token,
        allowed_channels=["C0ALERT"],
        clock=lambda: datetime.now(UTC),
        mode="socket",
        app_token=fake.app_token,
        base_url=fake.base_url,
    )

    async def ignore(_event: InboundEvent) -> None:
        return None

    await gateway.start(ignore)
    try:
        yield gateway, "C0ALERT"
    finally:
        await gateway.stop()
        await fake.stop()


@asynccontextmanager
async def contact_gateway() -> AsyncIterator[tuple[Gateway, str]]:
    """Contact methods through Apprise, to a real JSON webhook receiver on loopback (json://): a send that the
    receiver did not get raises RetryLater, so each passing send arrived."""
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gateway = ContactGateway({"ops-hook": SecretStr(f"json://127.0.0.1:{port}/hook")}, clock=lambda: datetime.now(UTC))

    async def ignore(_event: InboundEvent) -> None:
        return None

    await gateway.start(ignore)
    try:
        yield gateway, "ops-hook"
    finally:
        await gateway.stop()
        await runner.cleanup()


GATEWAYS: dict[str, Callable[[], Any]] = {
    "telegram": telegram_gateway,
    "slack": slack_gateway,
    "contact": contact_gateway,
}


@pytest.fixture(params=sorted(GATEWAYS))
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Gateway, str]]:
    async with GATEWAYS[request.param]() as pair:
        yield pair


def _hostile() -> Message:
    return Message(
        title="<b>not bold</b> & *stars* _under_ `tick`",
        severity="critical",
        host="web-1\u202e",
        body="[link](javascript:alert(1)) \x1b[2J",
        labels=(("team", "<script>"),),
        code=(CodeBlock("line\n" * 10),),
        buttons=(Button("Ack", "ack:1"),),
    )


async def test_capabilities_are_consistent(gateway: tuple[Gateway, str]) -> None:
    caps = gateway[0].capabilities
    assert caps.max_message_length > 0
    assert (caps.max_button_data_bytes > 0) == caps.buttons
    assert (caps.max_file_bytes > 0) == caps.files
    assert caps.rate_limits.global_per_second > 0


async def test_send_edit_and_edit_to_same_content(gateway: tuple[Gateway, str]) -> None:
    gw, chat = gateway
    caps = gw.capabilities
    message_id = await gw.send(chat, render(_hostile(), caps))
    assert message_id
    if caps.edits:
        edited = render(Message(title="edited"), caps)
        await gw.edit(chat, message_id, edited)
        await gw.edit(chat, message_id, edited)  # identical content is success, not an error


async def test_longest_message_is_accepted(gateway: tuple[Gateway, str]) -> None:
    gw, chat = gateway
    caps = gw.capabilities
    rendered = render(Message(title="big", code=(CodeBlock("x<&>" * caps.max_message_length),)), caps)
    assert await gw.send(chat, rendered)


async def test_replies_and_files_when_supported(gateway: tuple[Gateway, str]) -> None:
    gw, chat = gateway
    caps = gw.capabilities
    first = await gw.send(chat, render(Message(body="first"), caps))
    if caps.replies:
        assert await gw.send(chat, render(Message(body="reply"), caps), reply_to=first)
    if caps.files:
        caption = render(Message(body="tail"), caps)
        assert await gw.send_file(chat, "output.txt", b"all of it\n" * 1000, caption=caption, reply_to=first)


async def test_answer_button_never_raises(gateway: tuple[Gateway, str]) -> None:
    await gateway[0].answer_button("unknown-callback", "ok")
