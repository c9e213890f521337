"""Runs one command on this host: own session, clean env, rlimits, timeout that kills the whole tree, capped output.

INTERFACE ONLY — implementation is being written (remote-execution issue). Do not ship as is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["RunResult", "RunSpec", "run"]


@dataclass(frozen=True, slots=True)
class RunSpec:
    argv: Sequence[str]
    timeout_s: float = 60.0
    kill_grace_s: float = 3.0
    output_cap_bytes: int = 64 * 1024
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)  # added to the clean base environment


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int  # the child's; 124 timeout; 128+N killed by signal N; 126 not executable; 127 not found
    signal: int | None
    timed_out: bool
    cancelled: bool
    truncated: bool
    output: bytes  # head + marker + tail when truncated, at most about output_cap_bytes
    output_bytes: int  # everything the command printed, kept or not
    duration_s: float


# Receives each chunk of interleaved stdout+stderr as it arrives (already counted against the cap).
OutputSink = Callable[[bytes], Awaitable[None]]


async def run(spec: RunSpec, on_output: OutputSink | None = None) -> RunResult:
    raise NotImplementedError("runner implementation pending")
