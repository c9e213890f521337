"""B14 ingest on PostgreSQL, two controller replicas vs one, in the same run (issue #23): replicas are for
availability, so two must be no slower than one. Target: two replicas' combined throughput ≥ 1.0× one replica's.

Two replicas run on one database. In alternating rounds (so background noise hits both sides), one replica takes
all `c` connections while the other idles, then the load is split over both (c/2 connections each): the same
distinct alerts, the same duration; the best round of each side counts. Both replicas run on the server core like
every server in this suite (bench/process.py), so the second buys no CPU: the row shows what running two costs
(claims, leases, PostgreSQL row locks), not a speed-up. On a two-core machine the two replicas also halve each
other's group-commit batches on the one server core, so the row is a floor: replicas on their own hosts do not
share a core. It is measured the same way with and without the work claims of issue #23 (the ingest path gained
two columns in the statement that takes an announcement, nothing else).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bench.alerts import webhook_body
from bench.compare import ROUND_STRIDE
from bench.context import Benchmark, Context
from bench.loadgen import LoadResult, build_request, run_load
from bench.peers import start_postgres
from bench.process import BenchError, pin_load_generator
from bench.report import Row, at_least, at_most, info
from bench.teleops_server import TeleOps, start_teleops

__all__ = ["BENCHMARK"]

PATH = "/api/v1/alerts/alertmanager"
PEER = "one replica"


async def _load(ctx: Context, replicas: list[TeleOps], run: str, offset: int, concurrency: int) -> LoadResult:
    """Split `concurrency` connections over `replicas`; one result over all of them (wall time of the slowest)."""

    def factory(teleops: TeleOps, base: int) -> Callable[[int], bytes]:
        auth = {"Authorization": f"Bearer {teleops.ingest_token}"}
        return lambda i: build_request("POST", "127.0.0.1", teleops.port, PATH, webhook_body([base + i], run), auth)

    share = max(concurrency // len(replicas), 1)
    results = await asyncio.gather(
        *(
            run_load(
                "127.0.0.1",
                teleops.port,
                factory(teleops, offset + n * ROUND_STRIDE),
                concurrency=share,
                duration=ctx.pick(None, 2.0, 10.0),
                requests=ctx.pick(100, None, None),
                warmup=ctx.pick(10, 100, 300),
            )
            for n, teleops in enumerate(replicas)
        )
    )
    merged = LoadResult(requests=0, seconds=max(r.seconds for r in results))
    for result in results:
        if result.errors:
            raise BenchError(f"a replica answered non-2xx statuses {result.statuses}")
        merged.requests += result.requests
        merged.latencies.extend(result.latencies)
    return merged


async def run(ctx: Context) -> list[Row]:
    concurrency = ctx.pick(4, 32, 32)
    pin_load_generator()
    pg = await start_postgres(ctx.sub("b14-pg"))
    try:
        first = await start_teleops(ctx.sub("b14-replica-1"), db_url=pg.url)
        second: TeleOps | None = None
        try:
            # First with no second replica at all: what a second one costs the first while it only runs beside it
            # (its leases, claims polling and connection refreshes), without splitting the load or the cores.
            solo: LoadResult | None = None
            for round_index in range(ctx.pick(1, 2, 3)):
                offset = (8 * round_index + 6) * ROUND_STRIDE
                result = await _load(ctx, [first], f"b14s{round_index}", offset, concurrency)
                solo = result if solo is None or result.throughput > solo.throughput else solo
            second = await start_teleops(ctx.sub("b14-replica-2"), db_url=pg.url, sender="bench-2", keys_from=first)
            one: LoadResult | None = None
            two: LoadResult | None = None
            for round_index in range(ctx.pick(1, 2, 3)):
                offset = 8 * round_index * ROUND_STRIDE
                alone = await _load(ctx, [first], f"b14a{round_index}", offset, concurrency)
                both = await _load(ctx, [first, second], f"b14b{round_index}", offset + 4 * ROUND_STRIDE, concurrency)
                one = alone if one is None or alone.throughput > one.throughput else one
                two = both if two is None or both.throughput > two.throughput else two
        finally:
            first.server.stop()
            if second is not None:
                second.server.stop()
    finally:
        pg.stop()
    if one is None or two is None or solo is None:
        raise BenchError("no round ran")
    return [
        info(
            "B14",
            f"distinct alerts throughput, one replica with a second running idle beside it vs none (c={concurrency})",
            "alerts/s",
            one.throughput,
            solo.throughput,
            "one replica, no second",
        ),
        at_least(
            "B14",
            f"distinct alerts throughput, PostgreSQL, two replicas vs one (c={concurrency})",
            "alerts/s",
            two.throughput,
            one.throughput,
            PEER,
            1.0,
        ),
        at_most("B14", "distinct alerts p99, two replicas vs one", "ms", two.p(99) * 1e3, one.p(99) * 1e3, PEER, 1.5),
    ]


BENCHMARK = Benchmark("B14", "ingest, two replicas vs one on PostgreSQL", run)
