"""B7 1 MB of command output streamed to chat: time to the first edit of the output message, how edits are
paced (Telegram allows about one a second per chat), and what the rate-limited fake refused.

A real `teleops serve` with its embedded agent and the Telegram gateway pointed at the rate-limited fake Bot
API (bench/chat_receiver.py). A linked person replies to an incident's message with a command that prints what
`seq 1 150000` prints (about 1 MB) with a one-second pause halfway; the output streams into one message, edited
as it arrives, and the whole output ends as a file.
No peer: the target is the platform's own limit (≤ 1 edit a second to a chat, no 429).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.b03_b04_chat import DIRECT_CHAT, TOKEN, _receiver, _stats
from bench.context import Benchmark, Context
from bench.loadgen import build_request, request_once
from bench.process import BenchError
from bench.report import Row, info
from bench.teleops_server import create_token, start_teleops

__all__ = ["BENCHMARK"]

# What `seq 1 150000` prints (1,038,894 bytes), with a pause halfway: a command that ends within half a second is
# shown once, finished (chat/commands.py), and B7 is about output streamed while the command still runs.
COMMAND = """perl -e '$| = 1; print "$_\\n" for 1 .. 75000; sleep 1; print "$_\\n" for 75001 .. 150000'"""


async def _http(port: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    payload = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {token}"}
    status, raw = await request_once(
        "127.0.0.1", port, build_request(method, "127.0.0.1", port, path, payload, headers=headers)
    )
    return status, json.loads(raw or b"null")


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise BenchError(f"B7: timed out waiting for {what}")


async def run(ctx: Context) -> list[Row]:
    workdir = ctx.sub("b7")
    fake = await _receiver(workdir, "telegram", "--rate-limited")
    try:
        extra: dict[str, object] = {
            "telegram": {"token": TOKEN, "base_url": f"http://127.0.0.1:{fake.port}/bot", "alert_chats": [DIRECT_CHAT]},
            "users": [{"name": "ops", "role": "admin", "telegram_id": DIRECT_CHAT}],
            "local_agent": {"enabled": True},
        }
        teleops = await start_teleops(workdir, extra_config=extra)
        try:
            api = create_token(teleops.config, "api", "b7", "--user", "admin")

            async def agent_online() -> bool:
                _, body = await _http(teleops.port, "GET", "/api/v1/agents", api)
                return any(a["name"] == "localhost" and a["online"] for a in body["items"])

            await _until(agent_online, 30, "the embedded agent")
            alert = {"summary": "B7 output streaming", "host": "localhost", "check": "B7"}
            status, _ = await _http(teleops.port, "POST", "/api/v1/alerts/generic", teleops.ingest_token, alert)
            if status != 200:
                raise BenchError(f"B7: the alert was answered {status}")

            async def announced() -> bool:
                calls = (await _stats(fake))["calls"]
                return any(c[0] == "sendMessage" and c[3] == 200 for c in calls)

            await _until(announced, 30, "the incident message")
            status, _ = await request_once(
                "127.0.0.1",
                fake.port,
                build_request(
                    "POST",
                    "127.0.0.1",
                    fake.port,
                    "/reply",
                    json.dumps({"chat_id": DIRECT_CHAT, "user_id": DIRECT_CHAT, "text": COMMAND}).encode(),
                ),
            )
            replied = time.monotonic()

            async def file_sent() -> list[list[Any]] | None:
                calls: list[list[Any]] = (await _stats(fake))["calls"]
                return calls if any(c[0] == "sendDocument" and c[3] == 200 for c in calls) else None

            calls = await _until(file_sent, 120, "the output file")
        finally:
            teleops.server.stop()
    finally:
        fake.stop()
    after = [c for c in calls if c[2] >= replied]
    edits = sorted(c[2] for c in after if c[0] == "editMessageText" and c[3] == 200)
    refused = sum(1 for c in after if c[3] == 429)
    if not edits:
        raise BenchError("B7: the output message was never edited")
    first_message = min(c[2] for c in after if c[0] in ("sendMessage", "editMessageText") and c[3] == 200)
    file_at = min(c[2] for c in after if c[0] == "sendDocument" and c[3] == 200)
    busiest = max(sum(1 for t in edits if start <= t < start + 1.0) for start in edits)
    return [
        info("B7", "reply → first chat call for the command (message or edit)", "ms", (first_message - replied) * 1e3),
        info("B7", "reply → first edit of the output message", "ms", (edits[0] - replied) * 1e3),
        info("B7", "reply → whole output delivered as a file", "s", file_at - replied),
        info("B7", "edits of the output message", "edits", float(len(edits))),
        Row(
            "B7",
            "most edits in any 1 s (Telegram: about 1 a second per chat)",
            "edits",
            float(busiest),
            1.0,
            "platform limit",
            "lower",
            1.0,
        ),
        Row("B7", "429s from the rate-limited fake while streaming", "", float(refused), 0.0, "target 0", "lower", 1.0)
        if refused
        else info("B7", "429s from the rate-limited fake while streaming (target 0: met)", "", 0.0),
    ]


BENCHMARK = Benchmark("B7", "1 MB output streamed to chat", run)
