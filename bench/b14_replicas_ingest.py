"""B14 ingest on PostgreSQL, two controller replicas vs one, in the same run (issue #23): replicas are for
availability, so two must be no slower than one. Target: two replicas' combined throughput ≥ 1.0× one replica's.

Two replicas run on one database; the load is the same distinct alerts over `c` connections, all to one replica
or split over both (c/2 each). Three comparisons:
- **each replica its own CPU** (the target row): every replica in the round is held to the same CPU budget
  (bench/cpu_quota.py), as replicas on their own hosts each have their own CPU: adding a replica must not make
  the service ingest less. The pair has twice the CPU, so the row bounds their contention (row locks, claims,
  leases) only loosely; a further row shows each budgeted replica used its quota up in nearly every CFS period,
  so the budget limited it, not the database or the shared core.
- **sharing one core** (info): both replicas on the server core with no budget, so the second buys no CPU and
  each forms group commits of half the size; ingest throughput on PostgreSQL grows with the batch (one replica
  alone at c=16 ingests about what two at c=16 each do), so this row shows the batch effect, not contention.
- **a second replica idle** beside the first (info): what its leases, claim polling and refreshes cost.
Throughput falls as the tables grow and the caches warm, so the rounds run in a mirrored order and each side is
pooled over its rounds (all requests over all seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

from bench.alerts import webhook_body
from bench.compare import ROUND_STRIDE
from bench.context import Benchmark, Context
from bench.cpu_quota import Budget, cpu_budget
from bench.loadgen import LoadResult, build_request, run_load
from bench.peers import start_postgres
from bench.process import BenchError, pin_load_generator
from bench.report import Row, at_least, at_most, info
from bench.teleops_server import TeleOps, start_teleops

__all__ = ["BENCHMARK"]

PATH = "/api/v1/alerts/alertmanager"
PEER = "one replica"
# Each replica's CPU in the rows that model replicas on their own hosts: with two of them and PostgreSQL on the
# server core, the core still has room, so the database and the core are not what limits the pair.
BUDGET_CORES = 0.3


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


def _pool(results: list[LoadResult]) -> LoadResult:
    """Rounds of one side as one result: all their requests over all their seconds."""
    pooled = LoadResult(requests=0, seconds=0.0)
    for result in results:
        pooled.requests += result.requests
        pooled.seconds += result.seconds
        pooled.latencies.extend(result.latencies)
    return pooled


async def run(ctx: Context) -> list[Row]:
    concurrency = ctx.pick(4, 32, 32)
    pin_load_generator()
    pg = await start_postgres(ctx.sub("b14-pg"))
    sides = ("solo", "alone", "both", "budget one", "budget two")
    rounds: dict[str, list[LoadResult]] = {side: [] for side in sides}
    throttled: list[float] = []  # per budgeted replica and round: the share of CPU periods it used its quota up
    try:
        first = await start_teleops(ctx.sub("b14-replica-1"), db_url=pg.url)
        try:
            offsets = itertools.count(0, 2 * ROUND_STRIDE)  # a round of two replicas uses two strides

            async def measure(side: str, replicas: list[TeleOps]) -> None:
                offset = next(offsets)
                held: list[Budget] = []
                with contextlib.ExitStack() as budgets:
                    if side.startswith("budget"):
                        for n, teleops in enumerate(replicas):
                            held.append(budgets.enter_context(cpu_budget(teleops.server.pid, f"b14-{n}", BUDGET_CORES)))
                    result = await _load(ctx, replicas, f"b14{offset}", offset, concurrency)
                rounds[side].append(result)
                throttled.extend(budget.throttled_share for budget in held)

            # Throughput falls as the tables grow and the caches warm, so the rounds run in a mirrored order
            # (solo, alone, both, budget one, budget two, then the same backwards): every side's
            # rounds sit, on average, at the same point of the run; each side is pooled over its rounds.
            for cycle in range(ctx.pick(1, 1, 2)):
                await measure("solo", [first])
                second = await start_teleops(
                    ctx.sub(f"b14-replica-2-{cycle}"), db_url=pg.url, sender=f"bench-2-{cycle}", keys_from=first
                )
                try:
                    # Its start-up work (the first self-test, syncs, sweeps) runs in the seconds after /readyz: let it
                    # settle, or the first "alone" round measures a starting replica, not an idle one (it then
                    # takes 1–2 % of a core: its leases, claim polling and wake-ups).
                    await asyncio.sleep(ctx.pick(0.5, 3.0, 5.0))
                    order = [("alone", [first]), ("both", [first, second])]
                    order += [("budget one", [first]), ("budget two", [first, second])]
                    for side, replicas in [*order, *reversed(order)]:
                        await measure(side, replicas)
                finally:
                    second.server.stop()
                await measure("solo", [first])
        finally:
            first.server.stop()
    finally:
        pg.stop()
    pooled = {side: _pool(results) for side, results in rounds.items()}
    if not all(result.requests for result in pooled.values()):
        raise BenchError("no round ran")
    solo, alone, both = pooled["solo"], pooled["alone"], pooled["both"]
    one, two = pooled["budget one"], pooled["budget two"]
    return [
        info(
            "B14",
            f"distinct alerts throughput, one replica with a second running idle beside it vs none (c={concurrency})",
            "alerts/s",
            alone.throughput,
            solo.throughput,
            "one replica, no second",
        ),
        at_least(
            "B14",
            f"distinct alerts throughput, two replicas vs one, {BUDGET_CORES} core each (c={concurrency})",
            "alerts/s",
            two.throughput,
            one.throughput,
            PEER,
            1.0,
        ),
        at_most("B14", "distinct alerts p99, two replicas vs one", "ms", two.p(99) * 1e3, one.p(99) * 1e3, PEER, 1.5),
        # Near 100 %: the budget is what limits each replica in those rounds, not the database or the shared core.
        info("B14", f"periods a budgeted replica used its {BUDGET_CORES} core up (lowest)", "%", min(throttled) * 100),
        info(
            "B14",
            f"distinct alerts throughput, two replicas vs one sharing one core (c={concurrency})",
            "alerts/s",
            both.throughput,
            alone.throughput,
            PEER,
        ),
    ]


BENCHMARK = Benchmark("B14", "ingest, two replicas vs one on PostgreSQL", run)
