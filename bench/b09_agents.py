"""B9 1000 agents on one controller: controller memory per connected agent, and one command fanned out to all.

The agents are simulated in this process: each one is a real WebSocket client speaking the wire protocol
(hello → welcome, pong to pings, `started` + `exit` for every exec), with its own agent token, exactly what
the controller sees from `teleops agent` minus the subprocess. Memory per agent is the controller's RSS
growth from no agent to all connected, divided by the number of agents (target ≤ 64 KiB). Fan-out is the wall
time from `POST /api/v1/commands/batch` (one command on every agent) to all of them reported finished by
`GET /api/v1/commands?ids=…&wait=…` (target < 2 s for 1000). No peer: both targets are absolute, from the
remote-execution issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import secrets
import time
from datetime import UTC, datetime

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.context import Benchmark, Context
from bench.process import BenchError, rss_kib
from bench.report import Row
from bench.teleops_server import create_token, start_teleops
from teleops.store.database import Database, Transaction
from teleops.store.schema import tokens
from teleops.store.tokens import hash_secret
from teleops.wire import Exit, Hello, Started, decode, encode
from teleops.wire.messages import Exec, Ping, Pong

__all__ = ["BENCHMARK"]

CONNECT_CONCURRENCY = 50


def _raise_fd_limit(wanted: int) -> None:
    """Room for one socket per simulated agent, here and in the controller this process starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def _agent_tokens(db_url: str, names: list[str]) -> dict[str, str]:
    """One agent token per name, written straight into the store (the CLI would take a second each)."""
    secrets_by_name = {name: "tlo_ag_" + secrets.token_urlsafe(32) for name in names}
    now = datetime.now(UTC)
    rows = [
        {"kind": "agent", "name": name, "user_name": None, "secret_hash": hash_secret(secret), "created_at": now}
        for name, secret in secrets_by_name.items()
    ]

    def insert_all(conn: Transaction) -> None:
        conn.execute(tokens.insert(), rows)

    database = Database(db_url)
    try:
        await database.run_in_transaction(insert_all)
    finally:
        await database.close()
    return secrets_by_name


class _SimulatedAgent:
    def __init__(self, name: str, secret: str) -> None:
        self.name = name
        self.secret = secret
        self.socket: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, url: str) -> None:
        self.socket = await connect(
            url, additional_headers={"Authorization": f"Bearer {self.secret}"}, open_timeout=60, max_size=2**20
        )
        await self.socket.send(encode(Hello(agent=self.name, hostname=self.name, version="bench")))
        welcome = decode(str(await self.socket.recv()))
        if welcome.type != "welcome":
            raise BenchError(f"agent {self.name}: expected welcome, got {welcome.type}")
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        assert self.socket is not None
        async for frame in self.socket:
            message = decode(str(frame))
            if isinstance(message, Ping):
                await self.socket.send(encode(Pong(nonce=message.nonce)))
            elif isinstance(message, Exec):
                await self.socket.send(encode(Started(command_id=message.command_id, pid=1)))
                await self.socket.send(encode(Exit(command_id=message.command_id, exit_code=0)))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close()


async def _fan_out(base: str, api_token: str, names: list[str]) -> float:
    """Seconds from `POST /api/v1/commands/batch` (one command, every agent) to all reported finished through
    `GET /api/v1/commands?ids=…&wait=…`."""
    headers = {"Authorization": f"Bearer {api_token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        created = await client.post("/api/v1/commands/batch", json={"hosts": names, "command": "true"})
        if created.status_code >= 300:
            raise BenchError(f"POST /api/v1/commands/batch: {created.status_code} {created.text[:300]}")
        items = created.json()["items"]
        errors = [item for item in items if item["command"] is None]
        if errors:
            raise BenchError(f"{len(errors)} hosts not run, e.g. {errors[0]}")
        ids = ",".join(str(item["command"]["id"]) for item in items)
        while True:
            done = (await client.get("/api/v1/commands", params={"ids": ids, "wait": 10})).json()["items"]
            if all(c["status"] not in ("queued", "running") for c in done):
                break
        elapsed = time.perf_counter() - started
    failed = [c for c in done if c["status"] != "succeeded"]
    if failed:
        raise BenchError(f"{len(failed)} commands did not succeed, e.g. {json.dumps(failed[0])[:300]}")
    return elapsed


async def run(ctx: Context) -> list[Row]:
    count = ctx.pick(20, 300, 1000)
    _raise_fd_limit(count * 2 + 256)
    workdir = ctx.sub("b9")
    db_url = f"sqlite+aiosqlite:///{workdir}/teleops.db"
    teleops = await start_teleops(workdir, db_url=db_url, extra_config={"agents": {"heartbeat": "30s"}})
    agents: list[_SimulatedAgent] = []
    try:
        api_token = create_token(teleops.config, "api", "bench-b9", "--user", "admin")
        names = [f"sim-{n:04d}" for n in range(count)]
        secrets_by_name = await _agent_tokens(db_url, names)
        await asyncio.sleep(1.0)  # let the controller settle after start before the baseline
        before = rss_kib(teleops.server.pid)
        url = f"ws://127.0.0.1:{teleops.port}/api/v1/agent/ws"
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def join(name: str) -> None:
            agent = _SimulatedAgent(name, secrets_by_name[name])
            async with gate:
                await agent.connect(url)
            agents.append(agent)

        connect_started = time.perf_counter()
        await asyncio.gather(*(join(name) for name in names))
        connect_s = time.perf_counter() - connect_started
        await asyncio.sleep(1.0)  # the hub's bookkeeping for the last joins
        after = rss_kib(teleops.server.pid)
        per_agent_kib = max(0.0, (after - before) / count)
        fan_out_s = await _fan_out(f"http://127.0.0.1:{teleops.port}", api_token, names)
        teleops.server.check_alive()
    finally:
        await asyncio.gather(*(agent.close() for agent in agents), return_exceptions=True)
        teleops.server.stop()
    return [
        Row(
            "B9",
            f"controller memory per connected agent ({count} agents)",
            "KiB",
            per_agent_kib,
            64.0,
            "64 KiB budget",
            "lower",
            1.0,
        ),
        Row(
            "B9",
            f"one command fanned out to {count} agents, all finished",
            "s",
            fan_out_s,
            2.0,
            "2 s budget",
            "lower",
            1.0,
        ),
        Row(
            "B9",
            f"{count} agents connected (hello → welcome, {CONNECT_CONCURRENCY} at a time)",
            "s",
            connect_s,
            None,
            "",
            "info",
            None,
        ),
    ]


BENCHMARK = Benchmark("B9", "1000 simulated agents: memory per agent, fan-out", run)
