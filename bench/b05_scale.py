"""B5 scale: per-alert latency with 1k vs 100k open incidents (target ≤ 1.5×), and bytes per incident.

Both databases are pre-filled through bench/prefill.py, then the same client posts new distinct alerts
at the same concurrency; the lookup of the open incident must stay indexed, so latency must not grow
with the number of open incidents. Quick mode uses 20k instead of 100k to stay within its budget.
"""

from __future__ import annotations

from pathlib import Path

from bench.alerts import webhook_body
from bench.context import Benchmark, Context
from bench.loadgen import LoadResult, build_request, run_load
from bench.prefill import prefill_sqlite
from bench.process import BenchError, pin_load_generator
from bench.report import Row, at_most, info
from bench.teleops_server import start_teleops

__all__ = ["BENCHMARK"]

PATH = "/api/v1/alerts/alertmanager"
RUN = "b5"


async def _latency_at(ctx: Context, open_incidents: int, concurrency: int) -> tuple[LoadResult, int]:
    """Load a server holding `open_incidents`; the result and the database size afterwards in bytes."""
    workdir = ctx.sub(f"b5-{open_incidents}")
    db_path = workdir / "teleops.db"
    await prefill_sqlite(db_path, open_incidents, RUN)
    teleops = await start_teleops(workdir)
    try:
        auth = {"Authorization": f"Bearer {teleops.ingest_token}"}

        def new_alert(i: int) -> bytes:
            # Indices past the pre-filled ones: each request opens a new incident.
            return build_request("POST", "127.0.0.1", teleops.port, PATH, webhook_body([open_incidents + i], RUN), auth)

        pin_load_generator()
        result = await run_load(
            "127.0.0.1",
            teleops.port,
            new_alert,
            concurrency=concurrency,
            duration=ctx.pick(None, 2.0, 10.0),
            requests=ctx.pick(100, None, None),
            warmup=ctx.pick(5, 100, 300),
        )
        if result.errors:
            raise BenchError(f"TeleOps answered non-2xx statuses {result.statuses} with {open_incidents} incidents")
        stored = open_incidents + result.requests + ctx.pick(5, 100, 300)
    finally:
        teleops.server.stop()
    # After a clean stop SQLite has folded the WAL back into the main file.
    size = sum(path.stat().st_size for path in Path(workdir).glob("teleops.db*"))
    return result, size // max(1, stored)


async def run(ctx: Context) -> list[Row]:
    small = 1000
    large = ctx.pick(5000, 20_000, 100_000)
    concurrency = ctx.pick(2, 8, 8)
    small_result, _ = await _latency_at(ctx, small, concurrency)
    large_result, bytes_per_incident = await _latency_at(ctx, large, concurrency)
    peer = f"{small:,} open"
    return [
        at_most(
            "B5",
            f"new-alert p50 at {large:,} open (c={concurrency})",
            "ms",
            large_result.p(50) * 1e3,
            small_result.p(50) * 1e3,
            peer,
            1.5,
        ),
        info("B5", f"new-alert p99 at {large:,} open", "ms", large_result.p(99) * 1e3, small_result.p(99) * 1e3, peer),
        info("B5", f"throughput at {large:,} open", "alerts/s", large_result.throughput, small_result.throughput, peer),
        info("B5", f"bytes per incident (SQLite, {large:,} incidents)", "B", float(bytes_per_incident)),
    ]


BENCHMARK = Benchmark("B5", "scale: 1k vs 100k open incidents", run)
