"""What a benchmark gets from the runner: its mode, a temp dir, and the sizes for that mode."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from bench.report import Row

__all__ = ["Benchmark", "Context", "Mode"]

Mode = Literal["smoke", "quick", "full"]
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    mode: Mode
    workdir: Path

    def pick(self, smoke: T, quick: T, full: T) -> T:
        """The value for this mode: smoke (seconds, only proves the harness), quick (< 2 min in all), full."""
        return {"smoke": smoke, "quick": quick, "full": full}[self.mode]

    def sub(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Benchmark:
    """One entry of the suite. `unavailable()` returns why it cannot run yet (a part not landed), or None."""

    id: str
    title: str
    run: Callable[[Context], Awaitable[list[Row]]]
    unavailable: Callable[[], str | None] = lambda: None
