"""`python -m bench.profile {b1|b2|b6} [--seconds N]`: profile `teleops serve` under a benchmark's load.

Starts TeleOps on SQLite, drives it with the benchmark's requests, and records the server process with
py-spy (sampling, non-blocking, all threads); for b6 (`true` round trips, one at a time) the agent too.
Writes the collapsed stacks under bench/results/, and prints the functions with the most samples, by own time
and including callees.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.agent_setup import start_rig
from bench.alerts import FIRING_FIXTURE, webhook_body
from bench.loadgen import KeepAlive, build_request, run_load
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


def _record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
    command += ["--nonblocking", "--format", "raw", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(recorder: subprocess.Popen[bytes]) -> None:
    _out, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0:
        raise BenchError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


async def profile_commands(seconds: float) -> list[Path]:
    """B6's loop (POST `true`, wait for its end) under py-spy, recording the controller and the agent."""
    with tempfile.TemporaryDirectory(prefix="teleops-profile-") as workdir:
        rig, _connected = await start_rig(Path(workdir))
        try:
            connection = await KeepAlive.open("127.0.0.1", rig.teleops.port)
            outs = [RESULTS / "profile-b6.txt", RESULTS / "profile-b6-agent.txt"]
            pin_load_generator()
            pids = (rig.teleops.server.pid, rig.agent.pid)
            recorders = [_record(pid, seconds, out) for pid, out in zip(pids, outs, strict=True)]
            count = 0
            deadline = time.monotonic() + seconds + 1
            while time.monotonic() < deadline:
                await rig.run_command(connection, "true")
                count += 1
            connection.close()
            for recorder in recorders:
                _finish(recorder)
            print(f"b6: {count / (seconds + 1):,.0f} round trips/s under the profiler")
        finally:
            rig.stop()
    return outs


async def profile(scenario: str, seconds: float, concurrency: int) -> Path:
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
            pin_load_generator()
            recorder = _record(teleops.server.pid, seconds, raw)
            result = await run_load(
                "127.0.0.1", teleops.port, make, concurrency=concurrency, duration=seconds + 1, warmup=100
            )
            _finish(recorder)
            print(f"{scenario}: {result.throughput:,.0f} req/s, p50 {result.p(50) * 1e3:.1f} ms under the profiler")
        finally:
            teleops.server.stop()
    return raw


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=("b1", "b2", "b6"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        raise BenchError("py-spy is missing from this environment; scripts/bench installs it (requirements/test.lock)")
    if args.scenario == "b6":
        raws = asyncio.run(profile_commands(args.seconds))
    else:
        raws = [asyncio.run(profile(args.scenario, args.seconds, args.concurrency))]
    summary = "\n\n".join(f"{raw.name}\n" + summarize(raw, main_thread_only=True) for raw in raws)
    (RESULTS / f"profile-{args.scenario}.summary.txt").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
