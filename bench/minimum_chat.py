"""B3's second peer: the least any program can do under TeleOps' obligations, to show how far the target is.

`python -m bench.minimum_chat PORT DB_PATH BASE_URL CHAT` serves `POST /api/v1/alerts/{source}` with the
obligations TeleOps has (docs/architecture.md, "Invariants"; ADR 0003), and nothing else:
- the alert and its chat message are one row each, committed and fsynced (SQLite WAL, `synchronous=FULL`)
  before the request is answered and before the message is announced (invariant 1: nothing acknowledged
  is lost; every outgoing chat message is an outbox row until the platform accepted it);
- the message goes out through python-telegram-bot (the issue names it), to the same fake Bot API.

No parsing beyond `json.loads`, no deduplication, no rendering, no rate limits, no thread hop: SQLite runs on
the event loop. It is a lower bound for TeleOps' path, not a product; the benchmark reports TeleOps against
it and it against Alertmanager, so the part of the ratio any implementation would pay is visible.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from telegram import Bot

from bench.bare_app import serve_like_teleops

__all__ = ["main"]

TOKEN = "123456:BENCH-token"


def _database(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, chat INTEGER NOT NULL, text TEXT NOT NULL,"
        " sent INTEGER NOT NULL DEFAULT 0)"
    )
    return connection


def build(db_path: str, base_url: str, chat: int) -> Starlette:
    db = _database(db_path)
    bot = Bot(TOKEN, base_url=base_url)
    background: set[asyncio.Task[None]] = set()

    async def deliver(outbox_id: int, text: str) -> None:
        await bot.send_message(chat, text)
        db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (outbox_id,))

    async def receive(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        alert = payload["alerts"][0]
        text = alert["labels"].get("alertname", "alert")
        db.execute("BEGIN")
        db.execute("INSERT INTO alerts (body) VALUES (?)", (json.dumps(alert),))
        outbox_id = db.execute("INSERT INTO outbox (chat, text) VALUES (?, ?) RETURNING id", (chat, text)).fetchone()[0]
        db.execute("COMMIT")  # fsyncs the WAL (synchronous=FULL)
        task = asyncio.get_running_loop().create_task(deliver(outbox_id, text))
        background.add(task)
        task.add_done_callback(background.discard)
        return JSONResponse({"received": 1})

    async def ready(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/api/v1/alerts/{source}", receive, methods=["POST"]), Route("/readyz", ready)])


def main() -> None:
    port, db_path, base_url, chat = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    serve_like_teleops(build(db_path, base_url, chat), port)


if __name__ == "__main__":
    main()
