"""The embedded local agent: `teleops serve` runs `teleops agent` for this machine as a supervised child.

Same code path as a remote agent (a WebSocket over loopback with its own agent token), so the embedded
default runs commands exactly as production does. The child is restarted with backoff if it dies and is
terminated by its PID on shutdown; it also exits by itself if the controller disappears (--exit-with-parent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from pathlib import Path

import structlog

from teleops.config import Settings
from teleops.server.clock import Clock
from teleops.store.tokens import TokenExists, TokenKind, TokenStore

__all__ = ["LocalAgentSupervisor", "ensure_local_agent_token"]

log = structlog.get_logger(__name__)

TOKEN_FILE = "local-agent.token"  # noqa: S105 — a file name, not a secret
STATE_DIR = "local-agent-state"
BACKOFF_CAP_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long restarts from the smallest backoff
STOP_GRACE_S = 5.0


async def ensure_local_agent_token(settings: Settings, tokens: TokenStore, *, clock: Clock) -> Path | None:
    """The 0600 token file for the local agent: reuse the live token it holds, else create the token once.

    Returns None (and logs what to do) when a token of that name exists but the file does not hold it:
    token names are never reused, so the secret cannot be recovered.
    """
    name = settings.local_agent.name
    path = settings.data_dir / TOKEN_FILE
    if path.is_file():
        secret = path.read_text(encoding="utf-8").strip()
        record = await tokens.verify(TokenKind.AGENT, secret)
        if record is not None and record.name == name:
            return path
    try:
        secret = await tokens.create(TokenKind.AGENT, name, now=clock())
    except TokenExists:
        log.error(
            "local_agent.token_unavailable",
            name=name,
            token_file=str(path),
            hint=f"an agent token named {name!r} exists but {path} does not hold it (or it was revoked); "
            "set local_agent.name to a new name, or disable local_agent",
        )
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
    return path


class LocalAgentSupervisor:
    def __init__(self, settings: Settings, token_file: Path) -> None:
        self._settings = settings
        self._token_file = token_file
        self._stopping = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def argv(self) -> list[str]:
        settings = self._settings
        host = settings.server.host
        if host in ("", "0.0.0.0"):  # noqa: S104 — the listen address, mapped to loopback for our own child
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        argv = [
            sys.executable,
            "-m",
            "teleops",
            "agent",
            "--server",
            f"http://{host}:{settings.server.port}",
            "--name",
            settings.local_agent.name,
            "--token-file",
            str(self._token_file),
            "--state-dir",
            str(settings.data_dir / STATE_DIR),
            "--exit-with-parent",
            str(os.getpid()),
        ]
        policy = settings.local_agent.policy_file
        return [*argv, "--policy", policy] if policy else [*argv, "--allow-all"]

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="local-agent-supervisor")

    async def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                # Own session: a Ctrl-C on the terminal reaches the controller, which then stops us in order.
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv(), stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
            except OSError as exc:
                log.error("local_agent.spawn_failed", error=str(exc), retry_in_s=backoff)
            else:
                log.info("local_agent.started", pid=self._process.pid, name=self._settings.local_agent.name)
                code = await self._process.wait()
                if self._stopping.is_set():
                    return
                if time.monotonic() - started > HEALTHY_AFTER_S:
                    backoff = 1.0
                log.warning(
                    "local_agent.exited",
                    pid=self._process.pid,
                    exit_code=code,
                    retry_in_s=round(backoff, 1),
                    hint="see the agent's log lines above for why",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, BACKOFF_CAP_S)
