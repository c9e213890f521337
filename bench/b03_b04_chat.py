"""B3 alert → first chat API call, and B4 the 10k-alert storm, against the fake Telegram Bot API.

TeleOps (`teleops serve`, SQLite, Telegram gateway pointed at the fake with `base_url`, one alert chat)
vs Alertmanager 0.25 with `group_wait: 0s` posting to a tiny webhook receiver. Both far ends run as their
own processes (bench/chat_receiver.py) and stamp each call with CLOCK_MONOTONIC, the clock this process
stamps its sends with.

B3: one new alert at a time, TeleOps' samples 1 s apart (it paces a chat to one message a second), after one
warm-up alert a side that is not counted.
Latency = first sendMessage (webhook POST) arrival − the moment the alert's POST was written.
Targets p50 ≤ 3×, p99 ≤ 5× Alertmanager's. A third side, bench/minimum_chat.py, does only what TeleOps must
(the alert and its outbox row committed and fsynced before the message leaves; python-telegram-bot): its
ratio to Alertmanager is the part of the target no implementation under those obligations can avoid.
B4: N distinct alerts at c=32 into TeleOps with a rate-limited fake (Telegram's flood limits) and into
Alertmanager: time to ingest all, time to the first message, messages sent, 429s (target 0), peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.alerts import am_v2_body, webhook_body
from bench.context import Benchmark, Context
from bench.loadgen import build_request, percentile, request_once, run_load
from bench.peers import start_alertmanager
from bench.process import BenchError, Server, rss_kib, start_http
from bench.report import Row, at_most, info
from bench.teleops_server import TeleOps, start_teleops

__all__ = ["B3", "B4"]

PATH = "/api/v1/alerts/alertmanager"
AM_PATH = "/api/v2/alerts"
PEER = "Alertmanager 0.25 → webhook"
MINIMUM = "durable minimum: fsynced row + python-telegram-bot"
ALERT_CHAT = -1001234567890  # a group: Telegram (and TeleOps' pacing) allow 20 messages a minute there
MINIMUM_CHAT = 434343  # the durable minimum's private chat on the same fake
DIRECT_CHAT = 424242  # a private chat: one message a second, so B3 samples are not held by the group window
TOKEN = "123456:BENCH-token"


async def _receiver(workdir: Path, kind: str, *extra: str) -> Server:
    return await start_http(
        f"{kind} receiver",
        lambda port: [sys.executable, "-m", "bench.chat_receiver", kind, str(port), *extra],
        log_path=workdir / f"{kind}-receiver.log",
        pinned=False,  # the far end is not part of either side's CPU budget
    )


async def _stats(server: Server) -> dict[str, Any]:
    status, body = await request_once(
        "127.0.0.1", server.port, build_request("GET", "127.0.0.1", server.port, "/stats")
    )
    if status != 200:
        raise BenchError(f"{server.name} /stats answered {status}")
    result: dict[str, Any] = json.loads(body)
    return result


def _sends(stats: dict[str, Any]) -> list[list[Any]]:
    return [c for c in stats["calls"] if c[0] == "sendMessage" and c[3] == 200]


async def _teleops_with_telegram(workdir: Path, fake: Server, *, storm_threshold: int, chat: int) -> TeleOps:
    extra: dict[str, object] = {
        "telegram": {
            "token": TOKEN,
            "base_url": f"http://127.0.0.1:{fake.port}/bot",
            "alert_chats": [chat],
            "storm_threshold": storm_threshold,
        }
    }
    return await start_teleops(workdir, extra_config=extra)


async def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.002)
    return False


async def _one_latency(port: int, request: bytes, receiver: Server, count_of: Any, before: int) -> float:
    sent = time.monotonic()
    status, body = await request_once("127.0.0.1", port, request)
    if not 200 <= status < 300:
        raise BenchError(f"POST answered {status}: {body[:200]!r}")
    arrival: list[float] = []

    async def arrived() -> bool:
        times = count_of(await _stats(receiver))
        if len(times) > before:
            arrival.append(times[before])
            return True
        return False

    if not await _wait_for(arrived, 10.0):
        raise BenchError(f"{receiver.name}: no call within 10 s of an alert")
    return arrival[0] - sent


def _all_ms(samples: list[float]) -> list[float]:
    return [round(s * 1e3, 2) for s in samples]


async def _minimum(workdir: Path, fake: Server) -> Server:
    return await start_http(
        "durable minimum",
        lambda port: [
            *(sys.executable, "-m", "bench.minimum_chat", str(port), str(workdir / "minimum.db")),
            *(f"http://127.0.0.1:{fake.port}/bot", str(MINIMUM_CHAT)),
        ],
        log_path=workdir / "minimum.log",
    )


async def run_b3(ctx: Context) -> list[Row]:
    samples = ctx.pick(3, 8, 40)
    fake = await _receiver(ctx.sub("far-end"), "telegram")
    hook = await _receiver(ctx.sub("far-end"), "webhook")
    ours: list[float] = []
    theirs: list[float] = []
    least: list[float] = []
    try:
        # A storm threshold above the sample count: B3 measures one alert's way to chat, not storm folding.
        teleops = await _teleops_with_telegram(ctx.sub("b3-teleops"), fake, storm_threshold=10_000, chat=DIRECT_CHAT)
        am = await start_alertmanager(
            ctx.sub("b3-am"), webhook_url=f"http://127.0.0.1:{hook.port}/hook", group_wait="0s", group_interval="1s"
        )
        minimum = await _minimum(ctx.sub("b3-minimum"), fake)
        try:
            auth = {"Authorization": f"Bearer {teleops.ingest_token}"}

            def telegram_sends(stats: dict[str, Any]) -> list[float]:
                return [c[2] for c in _sends(stats) if c[1] is not None and int(c[1]) == DIRECT_CHAT]

            def minimum_sends(stats: dict[str, Any]) -> list[float]:
                return [c[2] for c in _sends(stats) if c[1] is not None and int(c[1]) == MINIMUM_CHAT]

            def webhook_posts(stats: dict[str, Any]) -> list[float]:
                return [p[0] for p in stats["posts"]]

            # One warm-up alert a side, not counted: the first one after a start pays for what every process
            # does once (threads started, statements compiled, the first connection to the far end).
            for i in range(-1, samples):  # alternate sides, so background noise hits both
                body = webhook_body([i + 1], "b3")
                request = build_request("POST", "127.0.0.1", teleops.port, PATH, body, auth)
                before = len(telegram_sends(await _stats(fake)))
                ours.append(await _one_latency(teleops.port, request, fake, telegram_sends, before))
                # TeleOps paces one message a second per chat (Telegram's flood limit): space the samples
                # so that each one measures the way to chat, not the pacing queue.
                await asyncio.sleep(1.05)
                am_request = build_request("POST", "127.0.0.1", am.port, AM_PATH, am_v2_body([i + 1], "b3"))
                before = len(webhook_posts(await _stats(hook)))
                theirs.append(await _one_latency(am.port, am_request, hook, webhook_posts, before))
                least_request = build_request("POST", "127.0.0.1", minimum.port, PATH, body)
                before = len(minimum_sends(await _stats(fake)))
                least.append(await _one_latency(minimum.port, least_request, fake, minimum_sends, before))
                if i < 0:
                    for side in (ours, theirs, least):
                        side.clear()
        finally:
            minimum.stop()
            am.stop()
            teleops.server.stop()
    finally:
        hook.stop()
        fake.stop()
    if os.environ.get("BENCH_SAMPLES"):  # the raw samples, for a closer look at a tail
        print(
            json.dumps({"teleops_ms": _all_ms(ours), "alertmanager_ms": _all_ms(theirs), "minimum_ms": _all_ms(least)})
        )
    return [
        at_most(
            "B3",
            "alert → first chat call, p50",
            "ms",
            percentile(ours, 50) * 1e3,
            percentile(theirs, 50) * 1e3,
            PEER,
            3.0,
        ),
        at_most(
            "B3",
            "alert → first chat call, p99",
            "ms",
            percentile(ours, 99) * 1e3,
            percentile(theirs, 99) * 1e3,
            PEER,
            5.0,
        ),
        info(
            "B3",
            "the durable minimum: alert → first chat call, p50",
            "ms",
            percentile(least, 50) * 1e3,
            percentile(theirs, 50) * 1e3,
            PEER,
        ),
        info(
            "B3",
            "the durable minimum: alert → first chat call, p99",
            "ms",
            percentile(least, 99) * 1e3,
            percentile(theirs, 99) * 1e3,
            PEER,
        ),
        info(
            "B3",
            "alert → first chat call, p50, vs the durable minimum",
            "ms",
            percentile(ours, 50) * 1e3,
            percentile(least, 50) * 1e3,
            MINIMUM,
        ),
    ]


async def _storm(port: int, make: Any, total: int) -> float:
    started = time.monotonic()
    result = await run_load("127.0.0.1", port, make, concurrency=32, requests=total)
    if result.errors:
        raise BenchError(f"storm answered non-2xx statuses {result.statuses}")
    return time.monotonic() - started


async def run_b4(ctx: Context) -> list[Row]:
    total = ctx.pick(200, 1_000, 10_000)
    settle = ctx.pick(2.0, 3.0, 10.0)
    fake = await _receiver(ctx.sub("far-end"), "telegram", "--rate-limited")
    hook = await _receiver(ctx.sub("far-end"), "webhook")
    try:
        teleops = await _teleops_with_telegram(ctx.sub("b4-teleops"), fake, storm_threshold=10, chat=ALERT_CHAT)
        try:
            auth = {"Authorization": f"Bearer {teleops.ingest_token}"}
            started = time.monotonic()
            ours_ingest = await _storm(
                teleops.port,
                lambda i: build_request("POST", "127.0.0.1", teleops.port, PATH, webhook_body([i], "b4"), auth),
                total,
            )
            await asyncio.sleep(settle)  # let the outbox drain what the limits allow
            ours_rss = rss_kib(teleops.server.pid, peak=True)
            calls = (await _stats(fake))["calls"]
        finally:
            teleops.server.stop()
        am = await start_alertmanager(
            ctx.sub("b4-am"), webhook_url=f"http://127.0.0.1:{hook.port}/hook", group_wait="0s", group_interval="1s"
        )
        try:
            am_started = time.monotonic()
            am_ingest = await _storm(
                am.port, lambda i: build_request("POST", "127.0.0.1", am.port, AM_PATH, am_v2_body([i], "b4")), total
            )
            await asyncio.sleep(settle)
            am_rss = rss_kib(am.pid, peak=True)
            posts = (await _stats(hook))["posts"]
        finally:
            am.stop()
    finally:
        hook.stop()
        fake.stop()
    sent = [c for c in calls if c[0] == "sendMessage" and c[3] == 200]
    limited = sum(1 for c in calls if c[3] == 429)
    first_ours = (min(c[2] for c in sent) - started) if sent else None
    first_am = (min(p[0] for p in posts) - am_started) if posts else None
    return [
        info("B4", f"{total:,} alerts ingested (c=32), wall", "s", ours_ingest, am_ingest, "Alertmanager 0.25"),
        info("B4", "storm: time to first message", "ms", _ms(first_ours), _ms(first_am), PEER),
        info("B4", f"storm: messages sent within {settle:g} s", "msgs", float(len(sent)), float(len(posts)), PEER),
        Row(
            "B4",
            "storm: 429s from the rate-limited fake",
            "",
            float(limited),
            None,
            "",
            "info",
            None,
            note="target 0: " + ("met" if limited == 0 else "MISSED"),
        ),
        info("B4", "storm: peak RSS", "MiB", ours_rss / 1024, am_rss / 1024, "Alertmanager 0.25"),
    ]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


B3 = Benchmark("B3", "alert → first chat API call", run_b3)
B4 = Benchmark("B4", "10k-alert storm", run_b4)
