"""The benchmarks in order. A benchmark whose part has not landed says so instead of inventing a number."""

from __future__ import annotations

from bench.b01_ingest_repeated import BENCHMARK as B1
from bench.b02_ingest_distinct import BENCHMARK as B2
from bench.b03_b04_chat import B3, B4
from bench.b05_scale import BENCHMARK as B5
from bench.b06_command_round_trip import BENCHMARK as B6
from bench.b07_output_streaming import BENCHMARK as B7
from bench.b08_concurrent_commands import BENCHMARK as B8
from bench.b09_agents import BENCHMARK as B9
from bench.b10_startup import BENCHMARK as B10
from bench.b11_memory_lookup import BENCHMARK as B11
from bench.b12_singleton_failover import BENCHMARK as B12
from bench.b13_replica_commands import BENCHMARK as B13
from bench.b14_replicas_ingest import BENCHMARK as B14
from bench.context import Benchmark, Context
from bench.report import Row

__all__ = ["SUITE", "select"]


async def _never(_ctx: Context) -> list[Row]:
    raise AssertionError("an unavailable benchmark is never run")


def _pending(bench_id: str, title: str, reason: str) -> Benchmark:
    return Benchmark(bench_id, title, _never, unavailable=lambda: f"not measured: {reason}")


SUITE: tuple[Benchmark, ...] = (
    B1,
    B2,
    B3,
    B4,
    B5,
    B6,
    B7,
    B8,
    B9,
    B10,
    B11,
    B12,
    B13,
    B14,
)


def select(only: list[str] | None) -> list[Benchmark]:
    """The benchmarks named in `only` (ids like B2, case-insensitive), or all. Raises ValueError for unknown ids."""
    if not only:
        return list(SUITE)
    wanted = [name.strip().upper() for name in only if name.strip()]
    known = {bench.id for bench in SUITE}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(b.id for b in SUITE)}")
    return [bench for bench in SUITE if bench.id in wanted]
