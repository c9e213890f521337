"""A `teleops serve` with its embedded agent, its Telegram gateway on the fake Bot API (bench/chat_receiver.py),
one linked admin in a private chat, and an incident already announced there: the setting of the benchmarks that
reply to an incident message (B6 via chat, B7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.b03_b04_chat import DIRECT_CHAT, TOKEN, _receiver, _stats
from bench.loadgen import build_request, request_once
from bench.process import BenchError, Server
from bench.teleops_server import TeleOps, create_token, start_teleops

__all__ = ["DIRECT_CHAT", "calls", "incident_chat", "reply", "until"]


async def _http(port: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {token}"}
    status, raw = await request_once(
        "127.0.0.1", port, build_request(method, "127.0.0.1", port, path, payload, headers=headers)
    )
    return status, json.loads(raw or b"null")


async def until(check: Any, timeout: float, what: str) -> Any:
    """Poll the async `check` every 50 ms until it returns something truthy; BenchError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


async def calls(fake: Server) -> list[list[Any]]:
    """The fake's call log: [method, chat id, arrival (CLOCK_MONOTONIC), status, text]."""
    found: list[list[Any]] = (await _stats(fake))["calls"]
    return found


async def reply(fake: Server, text: str) -> float:
    """The linked person replies `text` to the incident message; returns when (CLOCK_MONOTONIC) it was sent."""
    body = json.dumps({"chat_id": DIRECT_CHAT, "user_id": DIRECT_CHAT, "text": text}).encode()
    sent = time.monotonic()
    status, answer = await request_once(
        "127.0.0.1", fake.port, build_request("POST", "127.0.0.1", fake.port, "/reply", body)
    )
    if status != 200:
        raise BenchError(f"the fake Bot API refused the reply: {status} {answer[:200]!r}")
    return sent


@contextlib.asynccontextmanager
async def incident_chat(workdir: Path, *, rate_limited: bool) -> AsyncIterator[tuple[Server, TeleOps]]:
    """(the fake Bot API, TeleOps) with the incident message already delivered; both stopped on exit."""
    fake = await _receiver(workdir, "telegram", *(["--rate-limited"] if rate_limited else []))
    try:
        extra: dict[str, object] = {
            "telegram": {"token": TOKEN, "base_url": f"http://127.0.0.1:{fake.port}/bot", "alert_chats": [DIRECT_CHAT]},
            "users": [{"name": "ops", "role": "admin", "telegram_id": DIRECT_CHAT}],
            "local_agent": {"enabled": True},
        }
        teleops = await start_teleops(workdir, extra_config=extra)
        try:
            api = create_token(teleops.config, "api", "bench", "--user", "admin")

            async def agent_online() -> bool:
                _, body = await _http(teleops.port, "GET", "/api/v1/agents", api)
                return any(a["name"] == "localhost" and a["online"] for a in body["items"])

            await until(agent_online, 30, "the embedded agent")
            alert = {"summary": "bench: a reply to this incident runs a command", "host": "localhost", "check": "bench"}
            status, _ = await _http(teleops.port, "POST", "/api/v1/alerts/generic", teleops.ingest_token, alert)
            if status != 200:
                raise BenchError(f"the alert was answered {status}")

            async def announced() -> bool:
                return any(c[0] == "sendMessage" and c[3] == 200 for c in await calls(fake))

            await until(announced, 30, "the incident message")
            yield fake, teleops
        finally:
            teleops.server.stop()
    finally:
        fake.stop()
