"""`python -m bench.profile {b1|b2} [--seconds N]`: profile `teleops serve` under a benchmark's load.

Starts TeleOps on SQLite, drives it with the benchmark's requests, and records the server process with
py-spy (sampling, non-blocking, all threads). Writes the collapsed stacks and a flame graph under
bench/results/, and prints the functions with the most samples, by own time and including callees.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.alerts import FIRING_FIXTURE, webhook_body
from bench.loadgen import build_request, run_load
from bench.process import BenchError, pin_load_generator
from bench.teleops_server import start_teleops

RESULTS = Path(__file__).resolve().parent / "results"
PATH = "/api/v1/alerts/alertmanager"


def summarize(collapsed: Path, top: int = 25, *, main_thread_only: bool = False) -> str:
    """Own-time and inclusive sample counts per function from py-spy's raw (collapsed) output.

    With `main_thread_only`, only stacks of the event loop's thread (those rooted in the `-m` module run).
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        if main_thread_only and not stack.startswith("_run_module_as_main"):
            continue
        frames = [_short(frame) for frame in stack.split(";")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples" + (" (event-loop thread)" if main_thread_only else " (all threads)"), "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py)`; line numbers merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


async def profile(scenario: str, seconds: float, concurrency: int) -> Path:
    if shutil.which("py-spy") is None:
        raise BenchError("py-spy is missing; install the dev extras: pip install -e '.[dev]'")
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="teleops-profile-") as workdir:
        teleops = await start_teleops(Path(workdir))
        try:
            auth = {"Authorization": f"Bearer {teleops.ingest_token}"}
            repeated = build_request("POST", "127.0.0.1", teleops.port, PATH, FIRING_FIXTURE.read_bytes(), auth)

            def make(i: int) -> bytes:
                if scenario == "b1":
                    return repeated
                return build_request("POST", "127.0.0.1", teleops.port, PATH, webhook_body([i], "prof"), auth)

            raw = RESULTS / f"profile-{scenario}.txt"
            svg = RESULTS / f"profile-{scenario}.svg"
            pin_load_generator()
            recorders = [
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(teleops.server.pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "250",
                        "--nonblocking",
                        "--format",
                        fmt,
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for fmt, out in (("raw", raw), ("flamegraph", svg))
            ][:1]
            result = await run_load(
                "127.0.0.1", teleops.port, make, concurrency=concurrency, duration=seconds + 1, warmup=100
            )
            for recorder in recorders:
                _out, err = recorder.communicate(timeout=60)
                if recorder.returncode != 0:
                    raise BenchError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
            print(f"{scenario}: {result.throughput:,.0f} req/s, p50 {result.p(50) * 1e3:.1f} ms under the profiler")
        finally:
            teleops.server.stop()
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=("b1", "b2"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    raw = asyncio.run(profile(args.scenario, args.seconds, args.concurrency))
    summary = summarize(raw) + "\n\n" + summarize(raw, main_thread_only=True)
    (RESULTS / f"profile-{args.scenario}.summary.txt").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
