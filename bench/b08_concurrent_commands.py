"""B8 100 concurrent `sleep 0.1` on one agent via the API, until all are reported done, vs spawning the
same 100 processes directly with asyncio on the server core (where the agent and its commands run).
Target ≤ 1.5×."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.agent_setup import start_rig
from bench.context import Benchmark, Context
from bench.loadgen import KeepAlive
from bench.process import BenchError, on_server_core, pin_load_generator
from bench.report import Row, at_most

__all__ = ["BENCHMARK"]


async def _direct(count: int) -> float:
    started = time.perf_counter()

    async def one() -> None:
        process = await asyncio.create_subprocess_exec("sleep", "0.1")
        await process.wait()

    await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - started


async def run(ctx: Context) -> list[Row]:
    count = ctx.pick(10, 100, 100)
    rounds = ctx.pick(1, 2, 5)
    pin_load_generator()
    rig, _ = await start_rig(ctx.sub("b8-rig"))
    ours = []
    try:
        connections = [await KeepAlive.open("127.0.0.1", rig.teleops.port) for _ in range(count)]
        try:
            for _ in range(rounds):
                started = time.perf_counter()
                records = await asyncio.gather(*(rig.run_command(c, "sleep 0.1") for c in connections))
                ours.append(time.perf_counter() - started)
                failed = [r for r in records if r["status"] != "succeeded"]
                if failed:
                    raise BenchError(f"{len(failed)} of {count} `sleep 0.1` did not succeed: {failed[0]}")
        finally:
            for connection in connections:
                connection.close()
    finally:
        rig.stop()
    with on_server_core():
        direct = [await _direct(count) for _ in range(rounds)]
    return [
        at_most(
            "B8",
            f"{count} × `sleep 0.1` all done (wall)",
            "s",
            statistics.median(ours),
            statistics.median(direct),
            "direct asyncio spawn",
            1.5,
        )
    ]


BENCHMARK = Benchmark("B8", "100 concurrent commands", run)
