"""B6 command round trip: `true` via POST /api/v1/commands on a real agent, until the API reports it done,
vs the floor: one loopback WebSocket round trip plus a bare asyncio spawn of `true`. Target ≤ 1.5× floor.

The `ssh localhost true` peer (OpenSSH on a reused ControlMaster connection) is not measured yet.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.agent_setup import start_rig
from bench.context import Benchmark, Context
from bench.loadgen import KeepAlive, percentile
from bench.process import BenchError, free_port, pin_load_generator, spawn
from bench.report import Row, at_most, info

__all__ = ["BENCHMARK"]

_ROOT = Path(__file__).resolve().parent.parent


async def _floor(ctx: Context, repeats: int) -> list[float]:
    port = free_port()
    echo = spawn(
        "ws echo",
        [sys.executable, "-m", "bench.ws_echo", str(port)],
        port=port,
        log_path=ctx.sub("b6") / "echo.log",
        cwd=_ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                websocket = await connect(f"ws://127.0.0.1:{port}")
                break
            except OSError:
                echo.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError("the WebSocket echo server did not start") from None
                await asyncio.sleep(0.01)
        samples = []
        async with websocket:
            for _ in range(repeats):
                started = time.perf_counter()
                await websocket.send('{"type":"exec","argv":["true"]}')
                await websocket.recv()
                process = await asyncio.create_subprocess_exec("true")
                await process.wait()
                samples.append(time.perf_counter() - started)
        return samples
    finally:
        echo.stop()


async def run(ctx: Context) -> list[Row]:
    repeats = ctx.pick(5, 50, 200)
    pin_load_generator()
    rig, _connected = await start_rig(ctx.sub("b6-rig"))
    try:
        connection = await KeepAlive.open("127.0.0.1", rig.teleops.port)
        try:
            for _ in range(ctx.pick(1, 5, 10)):
                await rig.run_command(connection, "true")
            ours = []
            for _ in range(repeats):
                started = time.perf_counter()
                record = await rig.run_command(connection, "true")
                ours.append(time.perf_counter() - started)
                if record["status"] != "succeeded":
                    raise BenchError(f"`true` ended {record['status']}: {record}")
        finally:
            connection.close()
    finally:
        rig.stop()
    floor = await _floor(ctx, repeats)
    name = "spawn + WS round trip"
    return [
        at_most(
            "B6", "`true` via API, p50", "ms", statistics.median(ours) * 1e3, statistics.median(floor) * 1e3, name, 1.5
        ),
        info("B6", "`true` via API, p99", "ms", percentile(ours, 99) * 1e3, percentile(floor, 99) * 1e3, name),
    ]


BENCHMARK = Benchmark("B6", "command round trip", run)
