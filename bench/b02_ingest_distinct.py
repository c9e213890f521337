"""B2 ingest, distinct alerts, durable: every request a new alert, on SQLite and on PostgreSQL, vs a
real Alertmanager 0.25 fed the same alerts on /api/v2/alerts. Target ≥ 1.0× throughput, p99 ≤ AM's.

TeleOps answers 2xx only after the commit (fsync); Alertmanager keeps alerts in memory and snapshots
them every 15 minutes, so this compares a durable write against an in-memory one.
"""

from __future__ import annotations

from bench.alerts import am_v2_body, webhook_body
from bench.compare import Side, best_of_rounds
from bench.context import Benchmark, Context
from bench.loadgen import LoadResult, build_request
from bench.peers import start_alertmanager, start_postgres
from bench.report import Row, at_least, at_most, info
from bench.teleops_server import TeleOps, start_teleops

__all__ = ["BENCHMARK"]

PATH = "/api/v1/alerts/alertmanager"
AM_PATH = "/api/v2/alerts"
PEER = "Alertmanager 0.25"


async def _measure(ctx: Context, teleops: TeleOps, am_port: int, run: str) -> dict[str, LoadResult]:
    auth = {"Authorization": f"Bearer {teleops.ingest_token}"}

    def ours(i: int) -> bytes:
        return build_request("POST", "127.0.0.1", teleops.port, PATH, webhook_body([i], run), auth)

    def theirs(i: int) -> bytes:
        return build_request("POST", "127.0.0.1", am_port, AM_PATH, am_v2_body([i], run))

    return await best_of_rounds(
        [Side("teleops", teleops.port, ours), Side("am", am_port, theirs)],
        concurrency=ctx.pick(4, 32, 32),
        duration=ctx.pick(None, 2.0, 10.0),
        requests=ctx.pick(200, None, None),
        rounds=ctx.pick(1, 1, 2),
        warmup=ctx.pick(10, 100, 300),
    )


def _rows(db: str, results: dict[str, LoadResult], concurrency: int) -> list[Row]:
    ours, am = results["teleops"], results["am"]
    return [
        at_least(
            "B2",
            f"distinct alerts throughput, {db} (c={concurrency})",
            "alerts/s",
            ours.throughput,
            am.throughput,
            PEER,
            1.0,
        ),
        info("B2", f"distinct alerts p50, {db}", "ms", ours.p(50) * 1e3, am.p(50) * 1e3, PEER),
        at_most("B2", f"distinct alerts p99, {db}", "ms", ours.p(99) * 1e3, am.p(99) * 1e3, PEER, 1.0),
    ]


async def run(ctx: Context) -> list[Row]:
    concurrency = ctx.pick(4, 32, 32)
    rows: list[Row] = []
    am = await start_alertmanager(ctx.sub("b2-am"))
    try:
        teleops = await start_teleops(ctx.sub("b2-sqlite"))
        try:
            rows += _rows("SQLite", await _measure(ctx, teleops, am.port, "b2s"), concurrency)
        finally:
            teleops.server.stop()
        pg = await start_postgres(ctx.sub("b2-pg"))
        try:
            teleops = await start_teleops(ctx.sub("b2-postgres"), db_url=pg.url)
            try:
                rows += _rows("PostgreSQL", await _measure(ctx, teleops, am.port, "b2p"), concurrency)
            finally:
                teleops.server.stop()
        finally:
            pg.stop()
    finally:
        am.stop()
    return rows


BENCHMARK = Benchmark("B2", "ingest, distinct alerts, durable", run)
