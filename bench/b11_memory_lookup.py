"""B11 scenario memory: recurrence lookup + "last time" notification rendering, 1k vs 100k stored scenarios.

The database holds resolved scenarios over 50 alert names × (N / 500) hosts, each with a fix command (succeeded,
with output), a failed diagnostic and a note, and predecessor chains of ~10 occurrences per fingerprint.
Each sample is what the notifier does for a new incident inside the ingest transaction: `find_recurrence`,
the "last time" lines, the Run-again buttons, and the Telegram HTML rendering of the message. The lookup
must stay indexed, so p99 must not grow with the number of scenarios (peer: the same at 1k), and the issue's
absolute target is p99 < 10 ms. SQLite only; PostgreSQL is not measured here.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from bench.context import Benchmark, Context
from bench.report import Row, at_most, info
from teleops.chat.notify import incident_message
from teleops.chat.render import render
from teleops.chat.telegram.gateway import TELEGRAM_CAPABILITIES
from teleops.memory.service import ScenarioMemory
from teleops.store.database import Database
from teleops.store.schema import commands, incidents, timeline

__all__ = ["BENCHMARK"]

NAMES = 50
CHAIN = 10  # occurrences per (name, host): each size has the same history depth per fingerprint
CHUNK = 5000


async def _fill(db_path: Path, count: int) -> None:
    database = Database(f"sqlite+aiosqlite:///{db_path}")
    try:
        await database.migrate()
    finally:
        await database.close()
    engine = create_engine(f"sqlite:///{db_path}")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=300) / count  # spread over months: the 30-day count sees only part of a chain
    hosts = max(1, count // (NAMES * CHAIN))
    try:
        for first in range(0, count, CHUNK):
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
            with engine.begin() as conn:
                conn.execute(insert(incidents), rows)
                conn.execute(insert(commands), cmds)
                conn.execute(insert(timeline), notes)
    finally:
        engine.dispose()


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


def _samples(db_path: Path, count: int, lookups: int) -> list[float]:
    """Seconds per notification build, for incidents drawn from the newest tenth (long chains behind them)."""
    memory = ScenarioMemory(Database(f"sqlite+aiosqlite:///{db_path}"), clock=lambda: datetime(2026, 11, 1, tzinfo=UTC))
    engine = create_engine(f"sqlite:///{db_path}")
    rng = random.Random(11)
    timings = []
    try:
        with engine.connect() as conn:
            for _ in range(lookups):
                incident_id = rng.randint(max(1, count - count // 10), count)
                snapshot = {"id": incident_id, "name": f"Alert{(incident_id - 1) % NAMES}", "severity": "critical"}
                began = time.perf_counter()
                extra = memory.announcement(conn, snapshot)
                render(incident_message(snapshot, extra=extra), TELEGRAM_CAPABILITIES)
                timings.append(time.perf_counter() - began)
                if extra is None or not extra.buttons:
                    raise AssertionError(f"incident {incident_id} got no 'last time' block: the fill is wrong")
    finally:
        engine.dispose()
    return timings


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def run(ctx: Context) -> list[Row]:
    small, large = 1000, ctx.pick(5000, 20_000, 100_000)
    lookups = ctx.pick(50, 500, 2000)
    results = {}
    for count in (small, large):
        db_path = ctx.sub(f"b11-{count}") / "teleops.db"
        await _fill(db_path, count)
        _samples(db_path, count, 20)  # warm the page cache and statement caches
        results[count] = _samples(db_path, count, lookups)
    peer = f"{small:,} scenarios"
    p99_large, p99_small = _p(results[large], 99) * 1e3, _p(results[small], 99) * 1e3
    return [
        at_most("B11", f"lookup + render p99 at {large:,} scenarios", "ms", p99_large, p99_small, peer, 1.5),
        info("B11", f"lookup + render p50 at {large:,} scenarios", "ms", _p(results[large], 50) * 1e3),
        Row("B11", "absolute p99 (issue target < 10 ms)", "ms", p99_large, 10.0, "10 ms budget", "lower", 1.0),
    ]


BENCHMARK = Benchmark("B11", "scenario memory: recurrence lookup + render, 1k vs 100k", run)
