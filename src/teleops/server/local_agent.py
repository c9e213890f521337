"""The embedded local agent: `teleops serve` runs `teleops agent` for this machine as a supervised child.

Same code path as a remote agent (a WebSocket over loopback with its own agent token), so the embedded
default runs commands exactly as production does. The child is restarted with backoff if it dies and is
terminated by its PID on shutdown; it also exits by itself if the controller disappears (--exit-with-parent).

Stopping the child kills the commands it runs. A remote agent keeps its commands across a dropped connection and
reports them later, but this one stops with the controller: so once it has stopped, the controller records its
unfinished commands `killed` with that reason (`AgentHub.end_killed_at_shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from teleops.agent.spool import Spool
from teleops.config import Settings
from teleops.domain.clock import Clock
from teleops.store.database import StorageUnavailable
from teleops.store.tokens import TokenExists, TokenKind, TokenStore
from teleops.wire.command_ids import row_id_of

if TYPE_CHECKING:
    from teleops.commands.backend.agent_hub import AgentHub

__all__ = ["LocalAgentSupervisor", "ensure_local_agent_token"]

log = structlog.get_logger(__name__)

TOKEN_FILE = "local-agent.token"  # noqa: S105 — a file name, not a secret
REDACT_FILE = "local-agent-redaction.json"
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
    """`hub`: where the commands the child was running are recorded `killed` once `stop` has stopped it."""

    def __init__(
        self, settings: Settings, token_file: Path, *, hub: AgentHub | None = None, run_as: str | None = None
    ) -> None:
        self._settings = settings
        self._token_file = token_file
        self._run_as = run_as  # --run-as for the child (server/local_agent_user.py); None: it cannot switch
        self._hub = hub
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
        argv += ["--redact-file", str(self._redact_file())]
        policy = settings.local_agent.policy_file
        if policy:
            return [*argv, "--policy", policy]  # the policy says who its rules run as
        return [*argv, "--allow-all"] + (["--run-as", self._run_as] if self._run_as is not None else [])

    def _redact_file(self) -> Path:
        """The controller's configured redaction (`redaction.patterns`, `redaction.secrets`, chat tokens) for the
        child, 0600 in the data directory: its log lines and output are masked with them too, not only the
        built-ins (the child's log is the controller's)."""
        settings = self._settings
        secrets = settings.known_secrets()
        path = settings.data_dir / REDACT_FILE
        data = json.dumps({"patterns": list(settings.redaction.patterns), "secrets": secrets})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        os.chmod(path, 0o600)
        return path

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="local-agent-supervisor")

    async def stop(self) -> None:
        """Stop the child (SIGTERM; SIGKILL after STOP_GRACE_S) and stop restarting it. A child that stopped by
        itself killed its running commands on the way out: with a hub, they are then recorded as such."""
        self._stopping.set()
        process = self._process
        stopped_cleanly = False
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
                # 0: the agent ran its own stop, which kills every command it runs and waits for them.
                stopped_cleanly = process.returncode == 0
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if stopped_cleanly and self._hub is not None:
            await self._record_killed(self._hub)

    async def _record_killed(self, hub: AgentHub) -> None:
        """End the child's unfinished commands `killed`, except those whose result it spooled before it stopped:
        the next start of the child reports those, with their real outcome."""
        name = self._settings.local_agent.name
        try:
            spool = Spool(self._settings.data_dir / STATE_DIR)
            try:
                spooled = {row for r in spool.pending() if (row := row_id_of(r.command_id)) is not None}
            finally:
                spool.close()
        except OSError as exc:
            # Without the spool nothing can be told apart: leave them to the next start's reconciliation (`lost`).
            log.error("local_agent.spool_unreadable", error=str(exc), hint="its commands will show as lost")
            return
        try:
            ended = await hub.end_killed_at_shutdown(name, spared=spooled)
        except StorageUnavailable as exc:
            log.error("local_agent.kills_not_recorded", error=str(exc), hint="its commands will show as lost")
            return
        if ended:
            log.info("local_agent.commands_killed", name=name, count=ended)

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
