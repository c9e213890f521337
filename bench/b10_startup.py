"""B10 startup: `teleops serve` until /readyz answers (first start and restart), vs `python -c pass`.

And `teleops agent` from spawn until the controller lists it online (GET /api/v1/agents).
No target: the ratio says how much of the start is Python itself.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time

from bench.agent_setup import start_rig
from bench.context import Benchmark, Context
from bench.process import free_port, spawn, wait_http
from bench.report import Row, info
from bench.teleops_server import TELEOPS, write_config

__all__ = ["BENCHMARK"]


def _python_pass(ctx: Context, index: int) -> float:
    started = time.perf_counter()
    process = spawn(
        "python -c pass", [sys.executable, "-c", "pass"], port=0, log_path=ctx.sub("b10") / f"pass{index}.log"
    )
    process.process.wait(30)
    return time.perf_counter() - started


async def _serve_until_ready(ctx: Context, name: str, *, fresh: bool) -> float:
    workdir = ctx.sub(f"b10-{name}")
    if fresh:
        shutil.rmtree(workdir)
        workdir.mkdir()
    port = free_port()
    config = write_config(workdir, port=port, db_url=f"sqlite+aiosqlite:///{workdir}/teleops.db")
    started = time.perf_counter()
    server = spawn(
        "teleops serve", [*TELEOPS, "serve", "--config", str(config)], port=port, log_path=workdir / "serve.log"
    )
    try:
        await wait_http(server, "/readyz", timeout=60, interval=0.002)
        return time.perf_counter() - started
    finally:
        server.stop()


async def run(ctx: Context) -> list[Row]:
    repeats = ctx.pick(1, 2, 7)
    baseline = statistics.median(_python_pass(ctx, i) for i in range(repeats))
    cold = statistics.median([await _serve_until_ready(ctx, "cold", fresh=True) for _ in range(repeats)])
    await _serve_until_ready(ctx, "warm", fresh=True)  # the first start makes the database
    warm = statistics.median([await _serve_until_ready(ctx, "warm", fresh=False) for _ in range(repeats)])
    agent_times = []
    for index in range(repeats):
        rig, connected = await start_rig(ctx.sub(f"b10-agent{index}"))
        rig.stop()
        agent_times.append(connected)
    peer = "python -c pass"
    return [
        info("B10", "agent start → online on the controller", "s", statistics.median(agent_times), baseline, peer),
        info("B10", "serve → /readyz, first start (new DB)", "s", cold, baseline, peer),
        info("B10", "serve → /readyz, restart (existing DB)", "s", warm, baseline, peer),
    ]


BENCHMARK = Benchmark("B10", "startup", run)
