"""B11 scenario memory: recurrence lookup + "last time" notification rendering, 1k vs 100k stored scenarios.

The database holds resolved scenarios over 50 alert names × (N / 500) hosts, each with a fix command (succeeded,
with output), a failed diagnostic and a note, and predecessor chains of ~10 occurrences per fingerprint.
Each sample is what the notifier does for a new incident inside the ingest transaction: `find_recurrence`,
the "last time" lines, the Run-again buttons, and the Telegram HTML rendering of the message. The lookup
must stay indexed, so p99 must not grow with the number of scenarios (peer: the same at 1k), and the issue's
absolute target is p99 < 10 ms, on SQLite and on PostgreSQL (a temporary cluster, as in B2).
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.context import Benchmark, Context
from bench.peers import start_postgres
from bench.report import Row, at_most, info
from teleops.chat.notify import incident_message
from teleops.chat.render import render
from teleops.chat.telegram.gateway import TELEGRAM_CAPABILITIES
from teleops.memory.service import ScenarioMemory
from teleops.store.database import Database, Transaction
from teleops.store.schema import commands, incidents, timeline

__all__ = ["BENCHMARK"]

NAMES = 50
CHAIN = 10  # occurrences per (name, host): each size has the same history depth per fingerprint
CHUNK = 5000


async def _fill(url: str, count: int) -> None:
    """Insert `count` resolved scenarios in chunks (executemany), through the store's own transaction path."""
    database = Database(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=300) / count  # spread over months: the 30-day count sees only part of a chain
    hosts = max(1, count // (NAMES * CHAIN))

    def chunk(conn: Transaction, first: int) -> None:
        rows, cmds, notes = [], [], []
        for i in range(first, min(count, first + CHUNK)):
            name, host = f"Alert{i % NAMES}", f"host-{(i // NAMES) % hosts}"
            opened = start + step * i
            rows.append(_incident(i + 1, name, host, opened))
            cmds.append(_command(i * 2 + 1, i + 1, host, ["journalctl", "-u", "app"], 1, opened))
            cmds.append(_command(i * 2 + 2, i + 1, host, ["systemctl", "restart", "app"], 0, opened))
            notes.append(
                {
                    "incident_id": i + 1,
                    "at": opened + timedelta(minutes=3),
                    "kind": "note",
                    "actor": "alice",
                    "data": {"text": f"restart fixed it ({i})", "via": "bench"},
                }
            )
        conn.execute(insert(incidents), rows)
        conn.execute(insert(commands), cmds)
        conn.execute(insert(timeline), notes)

    try:
        await database.migrate()
        for first in range(0, count, CHUNK):
            await database.run_in_transaction(chunk, first)
        # Planner statistics, as a database that has lived with this data would have them (autovacuum on
        # PostgreSQL; SQLite's ANALYZE): a bulk load without them measures a cold planner, not the lookup.
        await database.run_in_transaction(_analyze)
    finally:
        await database.close()


def _analyze(conn: Transaction) -> None:
    conn.execute(text("ANALYZE"))


def _incident(incident_id: int, name: str, host: str, opened: datetime) -> dict[str, Any]:
    return {
        "id": incident_id,
        "source": "alertmanager",
        "fingerprint": f"{name}/{host}",
        "status": "resolved",
        "name": name,
        "severity": "critical",
        "host": host,
        "summary": f"{name} on {host}",
        "description": "",
        "labels": {"alertname": name, "instance": host},
        "annotations": {},
        "url": None,
        "count": 1,
        "digest": "0" * 64,
        "starts_at": opened,
        "created_at": opened,
        "last_seen_at": opened,
        "resolved_at": opened + timedelta(minutes=14),
        "resolved_by": "alice",
        "acknowledged_by": "alice",
        "predecessor_id": None,
    }


def _command(
    command_id: int, incident_id: int, host: str, argv: list[str], code: int, opened: datetime
) -> dict[str, Any]:
    return {
        "id": command_id,
        "requester": "alice",
        "host": host,
        "agent_name": host,
        "argv": argv,
        "status": "succeeded" if code == 0 else "failed",
        "timeout_s": 60,
        "incident_id": incident_id,
        "exit_code": code,
        "output": "line\n" * 200 + "done",
        "output_bytes": 1004,
        "truncated": False,
        "created_at": opened + timedelta(minutes=5),
        "finished_at": opened + timedelta(minutes=5, seconds=2),
    }


async def _samples(url: str, count: int, lookups: int) -> list[float]:
    """Seconds per notification build, for incidents drawn from the newest tenth (long chains behind them)."""
    database = Database(url)
    memory = ScenarioMemory(database, clock=lambda: datetime(2026, 11, 1, tzinfo=UTC))
    rng = random.Random(11)

    def measure(conn: Transaction) -> list[float]:
        timings = []
        for _ in range(lookups):
            incident_id = rng.randint(max(1, count - count // 10), count)
            snapshot = {"id": incident_id, "name": f"Alert{(incident_id - 1) % NAMES}", "severity": "critical"}
            began = time.perf_counter()
            extra = memory.announcement(conn, snapshot)
            render(incident_message(snapshot, extra=extra), TELEGRAM_CAPABILITIES)
            timings.append(time.perf_counter() - began)
            if extra is None or not extra.buttons:
                raise AssertionError(f"incident {incident_id} got no 'last time' block: the fill is wrong")
        return timings

    try:
        return await database.run_in_transaction(measure)
    finally:
        await database.close()


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def _measure(ctx: Context, backend: str, url_for: Any) -> list[Row]:
    small, large = 1000, ctx.pick(5000, 20_000, 100_000)
    lookups = ctx.pick(50, 500, 2000)
    results = {}
    for count in (small, large):
        url = await url_for(count)
        await _fill(url, count)
        await _samples(url, count, 20)  # warm the page cache and statement caches
        results[count] = await _samples(url, count, lookups)
    peer = f"{small:,} scenarios"
    p99_large, p99_small = _p(results[large], 99) * 1e3, _p(results[small], 99) * 1e3
    return [
        at_most("B11", f"lookup + render p99 at {large:,} scenarios, {backend}", "ms", p99_large, p99_small, peer, 1.5),
        info("B11", f"lookup + render p50 at {large:,} scenarios, {backend}", "ms", _p(results[large], 50) * 1e3),
        Row(
            "B11",
            f"absolute p99, {backend} (issue target < 10 ms)",
            "ms",
            p99_large,
            10.0,
            "10 ms budget",
            "lower",
            1.0,
        ),
    ]


async def run(ctx: Context) -> list[Row]:
    async def sqlite_url(count: int) -> str:
        return f"sqlite+aiosqlite:///{ctx.sub(f'b11-{count}') / 'teleops.db'}"

    rows = await _measure(ctx, "SQLite", sqlite_url)
    pg = await start_postgres(ctx.sub("b11-pg"))
    try:

        async def postgres_url(count: int) -> str:
            name = f"b11_{count}"
            await _create_database(pg.url, name)
            return pg.url.rsplit("/", 1)[0] + f"/{name}"

        rows += await _measure(ctx, "PostgreSQL", postgres_url)
    finally:
        pg.stop()
    return rows


async def _create_database(url: str, name: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


BENCHMARK = Benchmark("B11", "scenario memory: recurrence lookup + render, 1k vs 100k", run)
