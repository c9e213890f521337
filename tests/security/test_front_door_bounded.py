"""The doors that read a body before the caller is known (issue #18's last gaps), against a real controller on a
loopback port, over raw sockets: what the server read is bounded by what the test sent.

* PagerDuty's `routing_key` in the body: at most the first 4 KiB are read to find it (server/body_token.py). A
  60 KiB event with the key at its end is answered 401 after the test sent 5 KiB of it; with the key first it
  is accepted; a body that names a second, different key is 401.
* Slack's Events API (server/webhook_doors.py): a stale timestamp or a malformed signature is 401 before a body
  byte is sent; at most 8 unverified bodies are read at once, the 9th is 503 before its body is sent.
* `/ui/login`: a form over 4 KiB is 413 before it is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from tests.conftest import FakeClock
from tests.fakes.slack import FakeSlack, sign
from tests.fakes.telegram import free_port
from tests.live_controller import LiveController, live_controller
from tests.scenarios.conftest import eventually
from tests.settings import settings_with

from teleops.config import Settings
from teleops.server.webhook_doors import SLACK_UNVERIFIED_AT_ONCE
from teleops.store.tokens import TokenKind

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KiB = 1024
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK = "/api/v1/chat/slack/events"
PAGERDUTY = "/api/v1/alerts/pagerduty"
WELL_FORMED = "v0=" + "0" * 64  # the right shape, not the right HMAC


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def settings(tmp_path: Path, db_url: str, fake_slack: FakeSlack) -> Settings:
    return settings_with(
        data_dir=tmp_path / "data",
        server={"listen": f"127.0.0.1:{free_port()}", "body_timeout": "60s"},
        database={"url": db_url},
        local_agent={"enabled": True, "name": "web-1"},
        slack={
            "mode": "events",
            "bot_token": fake_slack.bot_token,
            "signing_secret": SLACK_SECRET,
            "base_url": fake_slack.base_url,
        },
    )


@dataclass
class Rig:
    live: LiveController
    host: str
    port: int
    ingest: str  # a valid ingest token

    async def open(self, method: str, path: str, headers: dict[str, str], length: int) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {length}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return Connection(reader, writer)

    async def reading(self, expected: int) -> bool:
        """True when /metrics says `expected` Slack bodies are being read before their signature is checked."""
        text = (await self.live.client.get("/metrics")).text
        line = next(line for line in text.splitlines() if line.startswith("teleops_slack_unverified_bodies "))
        return float(line.split()[1]) == expected


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The response's status, headers and body (a 20 s bound on the wait, not a measurement)."""
        async with asyncio.timeout(20):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(20):
            return await self.reader.read() == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def rig(settings: Settings, clock: FakeClock) -> AsyncIterator[Rig]:
    async with live_controller(settings, clock, timeout_s=30) as live:
        ingest = await live.services.tokens.create(TokenKind.INGEST, "pd", now=clock())
        host, port = settings.server.listen.rsplit(":", 1)
        yield Rig(live, host, int(port), ingest)


def event(routing_key: str, *, key_first: bool, size: int, extra: str = "") -> bytes:
    """A PagerDuty Events API v2 trigger of about `size` bytes (custom details pad it)."""
    payload = {
        "summary": "Disk / is full on web-1",
        "source": "web-1",
        "severity": "critical",
        "custom_details": {"pad": "x" * size},
    }
    rest = {"event_action": "trigger", "dedup_key": "disk-web-1", "payload": payload}
    document = {"routing_key": routing_key, **rest} if key_first else {**rest, "routing_key": routing_key}
    body = json.dumps(document)
    if extra:
        body = body[:-1] + extra + "}"
    return body.encode()


# -- PagerDuty: routing_key in the body's first 4 KiB ------------------------------------------------------------


async def test_a_key_at_the_end_of_a_60_kib_event_is_401_after_5_kib_were_sent(rig: Rig) -> None:
    body = event(rig.ingest, key_first=False, size=60 * KiB)
    assert body.index(b'"routing_key"') > 60 * KiB
    connection = await rig.open("POST", PAGERDUTY, {"Content-Type": "application/json"}, len(body))
    await connection.send(body[: 5 * KiB])  # the rest is never sent: the server cannot have read more than this
    status, headers, answer = await connection.answer()
    assert status == 401, answer
    assert headers["connection"] == "close"
    detail = json.loads(answer)["detail"]
    assert "first 4096 bytes" in detail
    assert "Put `routing_key` first" in detail
    assert "Authorization: Bearer TOKEN" in detail
    assert await connection.closed_by_server()


async def test_a_key_first_authenticates_a_60_kib_event(rig: Rig) -> None:
    body = event(rig.ingest, key_first=True, size=60 * KiB)
    connection = await rig.open("POST", PAGERDUTY, {"Content-Type": "application/json"}, len(body))
    await connection.send(body)
    status, _headers, answer = await connection.answer()
    assert status == 200, answer
    assert json.loads(answer)["received"] == 1
    connection.close()


async def test_a_small_event_authenticates_wherever_its_key_is(rig: Rig) -> None:
    """pdpyras and PagerDuty's own examples put the key after the payload; a normal event is under 4 KiB."""
    response = await rig.live.client.post(
        PAGERDUTY, content=event(rig.ingest, key_first=False, size=500), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "case", ["a second key later", "an invalid key first", "a nested key only", "an escaped key", "not an object"]
)
async def test_a_body_cannot_swap_or_hide_its_key(rig: Rig, case: str) -> None:
    body = {
        "a second key later": event(rig.ingest, key_first=True, size=100, extra=', "routing_key": "other-key"'),
        "an invalid key first": event("not-a-token", key_first=True, size=100),
        "a nested key only": json.dumps({"payload": {"routing_key": rig.ingest}, "event_action": "trigger"}).encode(),
        "an escaped key": b'{"routing_key": "' + rig.ingest[:4].encode() + b"\\u0041" + rig.ingest[5:].encode() + b'"}',
        "not an object": json.dumps([{"routing_key": rig.ingest}]).encode(),
    }[case]
    response = await rig.live.client.post(PAGERDUTY, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    assert "routing_key" not in response.text or "first" in response.text  # nothing about the body is echoed


async def test_a_nested_key_before_the_real_one_does_not_confuse_the_scan(rig: Rig) -> None:
    document = {
        "payload": {"summary": "s", "source": "web-1", "severity": "info", "custom_details": {"routing_key": "x"}},
        "routing_key": rig.ingest,
        "event_action": "trigger",
    }
    response = await rig.live.client.post(PAGERDUTY, json=document)
    assert response.status_code == 200, response.text


# -- Slack Events API: bounded before the signature can be checked --------------------------------------------------


@pytest.mark.parametrize("case", ["stale timestamp", "malformed signature", "uppercase v0 prefix"])
async def test_slack_headers_are_refused_before_a_body_byte_is_sent(rig: Rig, clock: FakeClock, case: str) -> None:
    now = int(clock().timestamp())
    headers = {
        "stale timestamp": {"X-Slack-Request-Timestamp": str(now - 301), "X-Slack-Signature": WELL_FORMED},
        "malformed signature": {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "v0=00"},
        "uppercase v0 prefix": {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "V0=" + "0" * 64},
    }[case]
    connection = await rig.open("POST", SLACK, headers, 100 * KiB)  # declared, never sent
    status, headers_back, answer = await connection.answer()
    assert status == 401, answer
    assert headers_back["connection"] == "close"
    assert b"invalid Slack signature" in answer
    assert await connection.closed_by_server()


async def test_at_most_8_unverified_slack_bodies_are_read_at_once(rig: Rig, clock: FakeClock) -> None:
    headers = {"X-Slack-Request-Timestamp": str(int(clock().timestamp())), "X-Slack-Signature": WELL_FORMED}
    slow = []
    try:
        for _ in range(SLACK_UNVERIFIED_AT_ONCE):
            connection = await rig.open("POST", SLACK, headers, 100 * KiB)
            await connection.send(b'{"type": "event_callback", ')  # and then nothing: a slow sender
            slow.append(connection)
        await eventually(lambda: rig.reading(SLACK_UNVERIFIED_AT_ONCE), what="8 Slack bodies being read")
        ninth = await rig.open("POST", SLACK, headers, 100 * KiB)  # its body is never sent
        status, headers_back, answer = await ninth.answer()
        assert status == 503, answer
        assert headers_back["retry-after"] == "1"
        assert headers_back["connection"] == "close"
        assert await ninth.closed_by_server()
    finally:
        for connection in slow:
            connection.close()
    await eventually(lambda: rig.reading(0), what="the slots freed")
    now = int(clock().timestamp())
    body = b'{"type": "url_verification", "challenge": "c"}'
    signed = {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(SLACK_SECRET, body, now)}
    again = await rig.live.client.post(SLACK, content=body, headers=signed)
    assert again.status_code == 200, again.text


async def test_a_slack_body_over_128_kib_is_cut(rig: Rig, clock: FakeClock) -> None:
    now = int(clock().timestamp())
    body = b" " * (129 * KiB)
    headers = {"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": sign(SLACK_SECRET, body, now)}
    response = await rig.live.client.post(SLACK, content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert "131072 bytes" in response.text


# -- /ui/login ---------------------------------------------------------------------------------------------------


async def test_a_login_form_over_4_kib_is_413_before_it_is_sent(rig: Rig) -> None:
    connection = await rig.open("POST", "/ui/login", {"Content-Type": "application/x-www-form-urlencoded"}, 4097)
    status, headers, answer = await connection.answer()
    assert status == 413, answer
    assert headers["connection"] == "close"
    assert b"4096 bytes" in answer
    within = "username=admin&password=" + "p" * 200 + "&csrf_token=x"
    async with httpx.AsyncClient(base_url=str(rig.live.client.base_url)) as client:
        response = await client.post(
            "/ui/login", content=within, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    assert response.status_code == 403, response.text  # read and judged (a stale CSRF token), not cut
