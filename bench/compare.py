"""Side-by-side load: TeleOps and its peer driven by the same client, in alternating rounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen import LoadResult, run_load
from bench.process import BenchError, pin_load_generator

__all__ = ["ROUND_STRIDE", "Side", "best_of_rounds"]

ROUND_STRIDE = 10_000_000


@dataclass
class Side:
    """A server to load: where it listens and how to build its i-th request."""

    name: str
    port: int
    make_request: Callable[[int], bytes]


async def best_of_rounds(
    sides: list[Side], *, concurrency: int, duration: float | None, requests: int | None, rounds: int, warmup: int
) -> dict[str, LoadResult]:
    """Each side's best round by throughput; rounds alternate sides so background noise hits both.

    Raises BenchError when a side answered anything but 2xx: a number from a failing server means nothing.
    """
    pin_load_generator()
    best: dict[str, LoadResult] = {}
    for round_index in range(rounds):
        # Each round gets fresh indices, so "distinct alerts" stay distinct across rounds.
        offset = round_index * ROUND_STRIDE
        for side in sides:
            make = side.make_request
            result = await run_load(
                "127.0.0.1",
                side.port,
                lambda i, make=make, offset=offset: make(offset + i),  # type: ignore[misc]
                concurrency=concurrency,
                duration=duration,
                requests=requests,
                warmup=warmup,
            )
            if result.errors:
                raise BenchError(f"{side.name} answered non-2xx statuses {result.statuses}")
            if side.name not in best or result.throughput > best[side.name].throughput:
                best[side.name] = result
    return best
