"""B6's second peer: the least any program can do for a command under TeleOps' obligations.

`python -m bench.minimum_commands PORT DB_PATH AGENT_PORT` serves `POST /api/v1/commands` and
`GET /api/v1/commands/{id}?wait=…` like TeleOps' API, over an agent `bench.floor_agent --journal FILE`:
- the command and its audit record are one transaction, committed and fsynced before the command is sent
  (docs/threat-model.md T30, write-ahead audit; SQLite WAL, `synchronous=FULL`);
- the agent appends the command id to its journal and fdatasyncs it before it starts the process, so a
  restarted agent knows the id and the controller never re-sends it blind (at most once, issue §6);
- the result is committed (not waited for on disk: a lost result is reconciled from the agent).

No authentication, no policy, no host lookup, no output handling, no thread hop: SQLite runs on the event loop.
A lower bound for TeleOps' path, not a product: B6 reports it against the floor and TeleOps against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect

from bench.bare_app import serve_like_teleops

__all__ = ["main"]


def _database(path: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    return connection


def build(db_path: str, agent_port: int) -> Starlette:
    durable = _database(db_path, "FULL")
    durable.execute(
        "CREATE TABLE IF NOT EXISTS commands (id INTEGER PRIMARY KEY, command TEXT NOT NULL, status TEXT NOT NULL,"
        " exit_code INTEGER)"
    )
    durable.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, event TEXT NOT NULL)")
    results = _database(db_path, "NORMAL")
    ids = itertools.count(1 + (durable.execute("SELECT max(id) FROM commands").fetchone()[0] or 0))
    finished: dict[int, asyncio.Future[dict[str, Any]]] = {}
    agent: list[ClientConnection] = []

    async def read_results(connection: ClientConnection) -> None:
        async for frame in connection:
            answer = json.loads(frame)
            record = {"id": answer["id"], "status": "succeeded" if answer["exit"] == 0 else "failed"}
            record["exit_code"] = answer["exit"]
            results.execute(
                "UPDATE commands SET status = ?, exit_code = ? WHERE id = ?",
                (record["status"], answer["exit"], answer["id"]),
            )
            future = finished.get(answer["id"])
            if future is not None and not future.done():
                future.set_result(record)

    async def create(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        command_id = next(ids)
        durable.execute("BEGIN")
        durable.execute(
            "INSERT INTO commands (id, command, status) VALUES (?, ?, 'running')", (command_id, body["command"])
        )
        durable.execute("INSERT INTO audit (event) VALUES (?)", (f"command.dispatching {command_id}",))
        durable.execute("COMMIT")  # fsynced before anything is sent
        finished[command_id] = asyncio.get_running_loop().create_future()
        await agent[0].send(json.dumps({"id": command_id, "argv": body["command"].split()}))
        return JSONResponse({"id": command_id, "status": "running"}, status_code=202)

    async def status(request: Request) -> JSONResponse:
        command_id = int(request.path_params["command_id"])
        future = finished.get(command_id)
        if future is None:
            return JSONResponse({"error": "unknown command"}, status_code=404)
        record = await asyncio.wait_for(asyncio.shield(future), float(request.query_params.get("wait", "30")))
        finished.pop(command_id, None)
        return JSONResponse(record)

    async def ready(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ready" if agent else "starting"}, status_code=200 if agent else 503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with connect(f"ws://127.0.0.1:{agent_port}") as connection:
            agent.append(connection)
            reader = asyncio.get_running_loop().create_task(read_results(connection))
            yield
            reader.cancel()

    routes = [
        Route("/api/v1/commands", create, methods=["POST"]),
        Route("/api/v1/commands/{command_id}", status),
        Route("/readyz", ready),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    port, db_path, agent_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    serve_like_teleops(build(db_path, agent_port), port)


if __name__ == "__main__":
    main()
