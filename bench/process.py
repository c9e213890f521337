"""Processes a benchmark starts: spawned on a free loopback port, waited for, killed by PID.

Every server side of a comparison runs pinned to the same CPU (core 0) and the load generator to the
other (core 1) when the machine has two or more, so TeleOps and its peer get the same CPU budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import HttpError, build_request, request_once

__all__ = [
    "BenchError",
    "Server",
    "free_port",
    "pin_load_generator",
    "rss_kib",
    "server_cpu_prefix",
    "spawn",
    "wait_http",
]

_PIN = {"enabled": True}


class BenchError(Exception):
    """A benchmark could not run (a peer did not start, a request failed). The message says why."""


def set_pinning(enabled: bool) -> None:
    _PIN["enabled"] = enabled


def _pinning_possible() -> bool:
    return _PIN["enabled"] and (os.cpu_count() or 1) >= 2


def server_cpu_prefix() -> list[str]:
    """`taskset -c 0` when pinning, so the server and every thread it makes run on core 0."""
    return ["taskset", "-c", "0"] if _pinning_possible() else []


def pin_load_generator() -> None:
    """Move this process (the load generator) to core 1 when pinning."""
    if _pinning_possible():
        os.sched_setaffinity(0, {1})


@contextlib.contextmanager
def on_server_core() -> Iterator[None]:
    """Run the body (and the processes it starts) on the server core, like every server side of a
    comparison; back on the load generator's core afterwards."""
    if not _pinning_possible():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


_REPOSITORY = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A process we started; `stop()` ends it (and its process group) by PID."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.process.returncode}; its log ends:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        # start_new_session=True made the process the leader of its own group: signal only that group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)


def spawn(
    name: str,
    argv: list[str],
    *,
    port: int,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    pinned: bool = True,
) -> Server:
    """Start `argv` (pinned to the server core unless pinned=False) with output into `log_path`."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    command = (server_cpu_prefix() if pinned else []) + argv
    log = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log.close()
    return Server(name, process, port, log_path)


async def start_http(
    name: str, argv_for: Callable[[int], list[str]], *, log_path: Path, pinned: bool = True, ready: str = "/readyz"
) -> Server:
    """Start `argv_for(port)` on a free port (cwd: the repository) and return it once GET `ready` answers 2xx;
    stopped again if it never does."""
    port = free_port()
    server = spawn(name, argv_for(port), port=port, log_path=log_path, cwd=_REPOSITORY, pinned=pinned)
    try:
        await wait_http(server, ready)
    except BaseException:
        server.stop()
        raise
    return server


async def wait_http(server: Server, path: str, *, timeout: float = 30.0, interval: float = 0.005) -> float:
    """Poll GET `path` until it answers 2xx; returns the seconds waited. Raises BenchError on timeout."""
    started = time.perf_counter()
    deadline = started + timeout
    request = build_request("GET", "127.0.0.1", server.port, path)
    while True:
        server.check_alive()
        try:
            status, _ = await request_once("127.0.0.1", server.port, request, timeout=2.0)
            if 200 <= status < 300:
                return time.perf_counter() - started
        except (TimeoutError, OSError, HttpError):
            pass
        if time.perf_counter() > deadline:
            raise BenchError(f"{server.name} did not answer GET {path} within {timeout:.0f}s:\n{server.log_tail()}")
        await asyncio.sleep(interval)


def rss_kib(pid: int, *, peak: bool = False) -> int:
    """Resident memory of `pid` (VmRSS, or VmHWM for the peak) in KiB, from /proc."""
    key = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {key} line")
