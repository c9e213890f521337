"""B1 ingest, repeated alert: the same Alertmanager body again and again (TeleOps' duplicate path)
vs a bare Starlette app answering the same POST under the same uvicorn settings. Target ≥ 0.5×."""

from __future__ import annotations

from bench.alerts import FIRING_FIXTURE
from bench.compare import Side, best_of_rounds
from bench.context import Benchmark, Context
from bench.loadgen import build_request
from bench.peers import start_bare_app
from bench.report import Row, at_least, info
from bench.teleops_server import start_teleops

__all__ = ["BENCHMARK"]

PATH = "/api/v1/alerts/alertmanager"


async def run(ctx: Context) -> list[Row]:
    body = FIRING_FIXTURE.read_bytes()
    concurrency = ctx.pick(4, 32, 32)
    teleops = await start_teleops(ctx.sub("b1-teleops"))
    try:
        bare = await start_bare_app(ctx.sub("b1-bare"))
        try:
            auth = {"Authorization": f"Bearer {teleops.ingest_token}"}
            teleops_request = build_request("POST", "127.0.0.1", teleops.port, PATH, body, auth)
            bare_request = build_request("POST", "127.0.0.1", bare.port, PATH, body, auth)
            results = await best_of_rounds(
                [
                    Side("teleops", teleops.port, lambda _i: teleops_request),
                    Side("bare", bare.port, lambda _i: bare_request),
                ],
                concurrency=concurrency,
                duration=ctx.pick(None, 3.0, 10.0),
                requests=ctx.pick(200, None, None),
                rounds=ctx.pick(1, 1, 3),
                warmup=ctx.pick(10, 200, 500),
            )
        finally:
            bare.stop()
    finally:
        teleops.server.stop()
    ours, peer = results["teleops"], results["bare"]
    name = "bare Starlette"
    rows = [
        at_least(
            "B1", f"repeated alert throughput (c={concurrency})", "req/s", ours.throughput, peer.throughput, name, 0.5
        ),
        info("B1", "repeated alert p50 latency", "ms", ours.p(50) * 1e3, peer.p(50) * 1e3, name),
        info("B1", "repeated alert p99 latency", "ms", ours.p(99) * 1e3, peer.p(99) * 1e3, name),
    ]
    return rows


BENCHMARK = Benchmark("B1", "ingest, repeated alert", run)
