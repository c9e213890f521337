"""`teleops agent`: read the token and policy, then stay connected to the controller until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from teleops.agent.allowlist import DEFAULT_RUN_AS, Allowlist, PolicyFileError
from teleops.agent.client import Agent, AgentOptions, agent_socket_url
from teleops.agent.environment import EnvPolicy, install_policy, installed_policy
from teleops.agent.spool import Spool
from teleops.agent.tls import TLSConfigError, parse_pins
from teleops.logs import use_log_redaction

__all__ = ["AgentSettings", "AgentSetupError", "default_state_dir", "run_agent"]

log = structlog.get_logger(__name__)

PARENT_CHECK_S = 1.0


class AgentSetupError(Exception):
    """The agent cannot start; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    server: str
    name: str
    token_file: Path
    policy_file: Path | None = None
    allow_all: bool = False
    run_as: str | None = None  # with allow_all: who commands run as when the agent is root (default nobody)
    redact_file: Path | None = None  # JSON {"patterns": [...], "secrets": [...]} masked too (the embedded agent)
    ca_file: Path | None = None
    pins: tuple[str, ...] = ()  # --pin as given: sha256//BASE64, sha256:BASE64 or sha256:HEX
    state_dir: Path | None = None
    labels: tuple[tuple[str, str], ...] = ()
    max_concurrent: int = 128
    exit_with_parent: int | None = None


def default_state_dir(name: str) -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=), else $XDG_STATE_HOME or ~/.local/state, per agent name."""
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0]) / name
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "teleops-agent" / name


def read_token(path: Path) -> str:
    """The secret in `path`. Warns when others may read it; raises AgentSetupError when unusable."""
    try:
        mode = path.stat().st_mode
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AgentSetupError(f"cannot read token file {path}: {exc.strerror}; check the path and permissions") from exc
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "agent.token_file_readable_by_others",
            token_file=str(path),
            mode=oct(stat.S_IMODE(mode)),
            hint=f"run `chmod 600 {path}`",
        )
    if not secret or any(c.isspace() for c in secret):
        raise AgentSetupError(
            f"token file {path} must hold just the token (from `teleops token create agent NAME`); it is empty or "
            "has several words"
        )
    return secret


def load_allowlist(settings: AgentSettings) -> Allowlist:
    """The host's policy, with every user it names checked (it exists; a non-root agent names only itself)."""
    if settings.policy_file is not None and settings.allow_all:
        raise AgentSetupError("give either --policy or --allow-all, not both")
    if settings.run_as is not None and not settings.allow_all:
        raise AgentSetupError("--run-as goes with --allow-all; with --policy, say run_as: in the policy file")
    if settings.allow_all:
        log.warning("agent.allow_all", hint="every command is allowed: meant only for the embedded local agent")
        allowlist = Allowlist.local_allow_all(settings.run_as or DEFAULT_RUN_AS)
    elif settings.policy_file is None:
        log.warning(
            "agent.no_policy", hint="without --policy this agent refuses every command; see docs/install-agent.md"
        )
        return Allowlist.deny_all()
    else:
        try:
            allowlist = Allowlist.load(settings.policy_file)
        except PolicyFileError as exc:
            raise AgentSetupError(str(exc)) from exc
    try:
        allowlist.check_users(euid=os.geteuid())
    except PolicyFileError as exc:
        where = settings.policy_file if settings.policy_file is not None else "--run-as"
        raise AgentSetupError(f"{where}: {exc}") from exc
    if settings.redact_file is not None:
        _add_redactions(allowlist, settings.redact_file)
    # From here on the agent's own log lines (argv, env) are masked like its commands' output.
    use_log_redaction(allowlist.redaction)
    return allowlist


def _add_redactions(allowlist: Allowlist, path: Path) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        patterns, secrets = data.get("patterns", []), data.get("secrets", [])
        if not all(isinstance(x, str) for x in [*patterns, *secrets]):
            raise ValueError("'patterns' and 'secrets' must be lists of strings")
        allowlist.add_redaction(patterns, secrets)
    except (OSError, ValueError, AttributeError, PolicyFileError) as exc:
        raise AgentSetupError(f"--redact-file {path}: {exc}") from exc


def build_agent(settings: AgentSettings) -> Agent:
    """Everything checked before the first dial. Raises AgentSetupError."""
    try:
        agent_socket_url(settings.server)
        pins = parse_pins(settings.pins)
    except ValueError as exc:  # TLSConfigError is one
        raise AgentSetupError(str(exc)) from exc
    token = read_token(settings.token_file)
    allowlist = load_allowlist(settings)
    # From here on every command of this process is checked against the host's env:/cwd: (docs/threat-model.md T14):
    # a variable or directory the controller sends that the policy file does not list is refused.
    source = str(settings.policy_file.absolute()) if settings.policy_file is not None else None
    install_policy(replace(allowlist.env_policy, source=source))
    state_dir = settings.state_dir or default_state_dir(settings.name)
    try:
        spool = Spool(state_dir)
    except OSError as exc:
        raise AgentSetupError(f"cannot use state directory {state_dir}: {exc.strerror}; pass --state-dir") from exc
    options = AgentOptions(
        server_url=settings.server,
        name=settings.name,
        token=token,
        hostname=socket.gethostname(),
        allowlist=allowlist,
        spool=spool,
        ca_file=settings.ca_file,
        pins=pins,
        labels=dict(settings.labels),
        max_concurrent=settings.max_concurrent,
    )
    try:
        return Agent(options)
    except TLSConfigError as exc:
        spool.close()
        raise AgentSetupError(str(exc)) from exc


async def _watch_parent(pid: int) -> None:
    # Polled: nothing wakes us when the parent dies (PR_SET_PDEATHSIG would need ctypes and root-free prctl).
    while os.getppid() == pid:  # noqa: ASYNC110
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("agent.parent_gone", parent_pid=pid, hint="the controller that started this agent exited")


async def run_agent(settings: AgentSettings) -> None:
    """Run until SIGTERM/SIGINT (or the parent given by --exit-with-parent exits). Raises AgentSetupError."""
    agent = build_agent(settings)
    env_policy = installed_policy() or EnvPolicy()
    log.info(
        "agent.starting",
        name=settings.name,
        server=settings.server,
        allowlist=agent_digest(agent),
        env_permitted=sorted(env_policy.env),
        cwd_permitted=sorted(env_policy.cwd),
        run_as=agent.default_run_as if os.geteuid() == 0 else None,
    )
    main = asyncio.create_task(agent.run_forever())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    watcher = asyncio.create_task(_watch_parent(settings.exit_with_parent)) if settings.exit_with_parent else None
    if watcher is not None:
        watcher.add_done_callback(lambda _task: main.cancel())
    try:
        await main
    except asyncio.CancelledError:
        log.info("agent.stopped", running_commands_killed=len(agent.running))
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def agent_digest(agent: Agent) -> str:
    return agent.allowlist_digest[:12]
