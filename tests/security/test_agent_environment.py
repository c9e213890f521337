"""docs/threat-model.md T14, the environment class: a compromised controller may send any `env` and `cwd` with an exec. With an
allowlisted `git status`, GIT_CONFIG_COUNT/KEY_0=core.fsmonitor/VALUE_0='touch CANARY' (or GIT_CONFIG_PARAMETERS)
makes git run the value through a shell — as root on the agent. The agent must refuse every variable its host's
policy does not list under `env:` (default none) and every directory not under `cwd:` (default only /), refuse
loader/interpreter variables whatever the policy, and record argv, env and cwd in its own log.

Three levels, all with the real git binary and a real repository:
- the payload itself is live (git run directly with it creates the canary), so the refusals below mean something;
- the runner (`teleops.agent.runner.run`) with and without a host policy installed;
- a real `teleops agent` process, started with the documented command line, against a malicious controller
  double: a real WebSocket server speaking wire protocol 1 that accepts the agent and sends what it likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from structlog.testing import CapturingLogger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from teleops.agent import runner
from teleops.agent.environment import EnvPolicy, install_policy, installed_policy
from teleops.agent.runner import ISOLATION_NONE, RunSpec, run
from teleops.wire import Ack, Exec, Exit, Hello, Message, Ping, Pong, Refused, Welcome, decode, encode

GIT = shutil.which("git")  # scripts/test installs it (the finding is about git); a missing git fails, never skips

EXIT_CONFIG = 78


def fsmonitor_count_payload(canary: Path) -> dict[str, str]:
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": f"touch {canary}"}


def fsmonitor_parameters_payload(canary: Path) -> dict[str, str]:
    return {"GIT_CONFIG_PARAMETERS": f"'core.fsmonitor'='touch {canary}'"}


PAYLOADS = {"GIT_CONFIG_COUNT": fsmonitor_count_payload, "GIT_CONFIG_PARAMETERS": fsmonitor_parameters_payload}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An empty git repository owned by whoever runs the tests (so git's safe.directory check passes)."""
    path = tmp_path / "repo"
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True, env={"PATH": os.environ["PATH"], "HOME": str(path)})
    return path


@pytest.fixture(autouse=True)
def no_leftover_policy() -> Iterator[None]:
    previous = installed_policy()
    yield
    install_policy(previous)


# -- the payload is live -------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_the_payload_runs_code_when_git_gets_it(payload: str, repo: Path, tmp_path: Path) -> None:
    """Without the agent in the way, this host's git runs core.fsmonitor from the environment: the attack is real."""
    canary = tmp_path / "CANARY"
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), **PAYLOADS[payload](canary)}
    subprocess.run(["git", "status"], cwd=repo, env=env, capture_output=True, timeout=30, check=False)
    assert canary.exists()


# -- the runner ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("with_policy", [True, False], ids=["host-policy", "library-default"])
async def test_runner_refuses_git_config_from_the_environment(
    payload: str, with_policy: bool, repo: Path, tmp_path: Path
) -> None:
    if with_policy:  # the repository is a permitted directory, TERM a permitted variable: GIT_* still never is
        install_policy(EnvPolicy(env=frozenset({"TERM"}), cwd=frozenset({"/", str(repo)}), source="/p.yaml"))
    canary = tmp_path / "CANARY"
    spec = RunSpec(["git", "status"], cwd=str(repo), env=PAYLOADS[payload](canary), use_cgroup=False, timeout_s=30)
    result = await run(spec)
    assert result.exit_code == 126
    assert result.isolation == ISOLATION_NONE
    assert result.error is not None
    assert payload in result.error
    if with_policy:
        assert "not permitted by this host's policy (env: [TERM])" in result.error
    assert not canary.exists()
    # The same command without the payload does run git there: the refusal was the environment's doing.
    clean = await run(RunSpec(["git", "status"], cwd=str(repo), use_cgroup=False, timeout_s=30))
    assert clean.exit_code == 0, clean.output
    assert not canary.exists()


@pytest.fixture
def audit() -> Iterator[CapturingLogger]:
    """The runner's host-local log lines, whatever structlog is configured with elsewhere in this process."""
    capture = CapturingLogger()
    original = runner.audit_log
    runner.audit_log = structlog.wrap_logger(capture, processors=[])
    yield capture
    runner.audit_log = original


async def test_a_started_command_is_logged_with_its_argv_env_and_cwd(audit: CapturingLogger, repo: Path) -> None:
    install_policy(EnvPolicy(env=frozenset({"TERM"}), cwd=frozenset({"/", str(repo)})))
    spec = RunSpec(["git", "status"], cwd=str(repo), env={"TERM": "xterm-256color"}, command_id="c-1", use_cgroup=False)
    result = await run(spec)
    assert result.exit_code == 0, result.output
    [call] = audit.calls
    assert call.method_name == "info"
    assert call.kwargs == {
        "event": "agent.command_exec",
        "decision": "run",
        "command_id": "c-1",
        "argv": ["git", "status"],
        "env": {"TERM": "xterm-256color"},
        "cwd": str(repo),
        "run_as": None,
    }


async def test_a_refused_command_is_logged_with_what_it_asked_for(
    audit: CapturingLogger, repo: Path, tmp_path: Path
) -> None:
    install_policy(EnvPolicy(cwd=frozenset({"/", str(repo)})))
    canary = tmp_path / "CANARY"
    env = fsmonitor_count_payload(canary)
    await run(RunSpec(["git", "status"], cwd=str(repo), env=env, command_id="c-2", use_cgroup=False))
    [call] = audit.calls
    assert call.method_name == "warning"
    assert call.kwargs["event"] == "agent.command_refused"
    assert call.kwargs["decision"] == "refused"
    assert call.kwargs["env"] == env
    assert call.kwargs["cwd"] == str(repo)
    assert call.kwargs["argv"] == ["git", "status"]
    assert "GIT_CONFIG_COUNT" in call.kwargs["reason"]
    assert not canary.exists()


async def test_a_directory_the_policy_does_not_list_is_refused(repo: Path, tmp_path: Path) -> None:
    install_policy(EnvPolicy(source="/etc/teleops/agent-policy.yaml"))
    canary = tmp_path / "ran"
    result = await run(RunSpec(["touch", str(canary)], cwd=str(repo), use_cgroup=False))
    assert result.exit_code == 126
    assert result.error == (
        f"working directory {str(repo)!r} is not permitted by this host's policy (cwd: [/]); "
        "add it under cwd: in /etc/teleops/agent-policy.yaml if commands may run there"
    )
    assert not canary.exists()


# -- a real agent against a malicious controller -------------------------------------------------------------


class MaliciousController:
    """A controller double holding the controller's role (docs/threat-model.md T14): a real WebSocket server speaking wire
    protocol 1 on loopback. It welcomes any agent and sends the exec it is told to, env and cwd included."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.replies: asyncio.Queue[Message] = asyncio.Queue()
        self._connection: ServerConnection | None = None
        self._server: Server | None = None

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, connection: ServerConnection) -> None:
        hello = decode(await connection.recv())
        assert isinstance(hello, Hello)
        welcome = Welcome(agent_id=1, agent=hello.agent, server_time=datetime.now(UTC), heartbeat_s=30)
        await connection.send(encode(welcome))
        self._connection = connection
        self.connected.set()
        with contextlib.suppress(ConnectionClosed):  # the agent going away at the end of a test
            async for frame in connection:
                message = decode(frame)
                if isinstance(message, Ping):
                    await connection.send(encode(Pong(nonce=message.nonce)))
                else:
                    await self.replies.put(message)

    async def execute(self, exec_: Exec, timeout: float = 30.0) -> Exit | Refused:
        """Send the exec; the agent's final answer for it (an exit, acknowledged, or a refusal)."""
        assert self._connection is not None
        await self._connection.send(encode(exec_))
        async with asyncio.timeout(timeout):
            while True:
                message = await self.replies.get()
                if isinstance(message, Exit | Refused) and message.command_id == exec_.command_id:
                    if isinstance(message, Exit):
                        await self._connection.send(encode(Ack(command_id=exec_.command_id)))
                    return message


class AgentUnderAttack:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, policy: Path) -> None:
        self.process = process
        self.log = log
        self.policy = policy

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def lines(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
        return found


def _agent_argv(server: str, folder: Path, policy: Mapping[str, object]) -> tuple[list[str], Path]:
    token_file = folder / "token"
    token_file.write_text("tlo_ag_not_checked_by_the_double\n")
    token_file.chmod(0o600)
    policy_file = folder / "agent-policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    argv = [sys.executable, "-m", "teleops", "agent", "--server", server, "--name", "web-1"]
    argv += ["--token-file", str(token_file), "--policy", str(policy_file), "--state-dir", str(folder / "state")]
    return argv, policy_file


def _agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    env["TELEOPS_LOG_JSON"] = "1"
    return env


@contextlib.asynccontextmanager
async def attacked_agent(
    tmp_path: Path, policy: Mapping[str, object]
) -> AsyncIterator[tuple[MaliciousController, AgentUnderAttack]]:
    controller = MaliciousController()
    server = await controller.start()
    folder = tmp_path / "agent"
    folder.mkdir()
    argv, policy_file = _agent_argv(server, folder, policy)
    log = folder / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=_agent_env()
        )
    agent = AgentUnderAttack(process, log, policy_file)
    try:
        async with asyncio.timeout(60):
            while not controller.connected.is_set():
                if process.poll() is not None:
                    pytest.fail(f"agent exited with {process.returncode}:\n{agent.text()[-3000:]}")
                await asyncio.sleep(0.05)
        yield controller, agent
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        await controller.stop()


def _refusal_text(answer: Exit | Refused) -> str:
    """What the agent said about a command it did not run: a `refused` before `started` (the controller records
    it `denied`), never an exit."""
    assert isinstance(answer, Refused), f"the command ran (exit {getattr(answer, 'exit_code', '?')})"
    return answer.reason


async def test_agent_refuses_git_config_sent_by_a_malicious_controller(repo: Path, tmp_path: Path) -> None:
    """The finding end to end: an allowlisted `git status`, the default policy (no env:), the fsmonitor payload."""
    canary = tmp_path / "CANARY"
    git_status = ["git", "-C", str(repo), "status"]
    # The repository is under pytest's root-only temporary directory: the rule runs git as root, as the finding did.
    rules = {"allow": [{"command": f"git -C {repo} status", "run_as": "root"}]}
    async with attacked_agent(tmp_path, rules) as (controller, agent):
        for number, payload in enumerate(sorted(PAYLOADS)):
            exec_ = Exec(command_id=f"evil-{number}", argv=git_status, timeout_s=30, env=PAYLOADS[payload](canary))
            answer = await controller.execute(exec_)
            reason = _refusal_text(answer)
            assert "not permitted by this host's policy (env: [])" in reason
            assert payload in reason
            assert "no policy can permit" in reason
            assert not canary.exists()
        # The same command without the payload runs: git is there and allowed, only the environment was refused.
        clean = await controller.execute(Exec(command_id="clean-1", argv=git_status, timeout_s=30))
        assert isinstance(clean, Exit)
        assert clean.exit_code == 0, clean.output
        assert "No commits yet" in clean.output
        assert agent.process.poll() is None  # it survived
    assert not canary.exists()
    refused = {line["command_id"]: line for line in agent.lines("agent.command_refused") if "env" in line}
    assert refused["evil-0"]["env"] == fsmonitor_count_payload(canary)
    assert refused["evil-0"]["cwd"] == "/"
    assert refused["evil-0"]["argv"] == git_status
    assert refused["evil-0"]["decision"] == "refused"
    assert refused["evil-1"]["env"] == fsmonitor_parameters_payload(canary)


async def test_agent_passes_permitted_env_and_cwd_and_logs_them(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    policy: dict[str, object] = {
        "allow": [{"command": "env", "run_as": "root"}, {"command": "pwd", "run_as": "root"}],  # workdir is root's
        "env": ["TERM"],
        "cwd": [str(workdir)],
    }
    async with attacked_agent(tmp_path, policy) as (controller, agent):
        env_run = Exec(command_id="ok-1", argv=["env"], timeout_s=30, cwd=str(workdir), env={"TERM": "xterm-256color"})
        answer = await controller.execute(env_run)
        assert isinstance(answer, Exit)
        assert answer.exit_code == 0, answer.output
        assert "TERM=xterm-256color" in answer.output.splitlines()

        unlisted = Exec(command_id="no-1", argv=["env"], timeout_s=30, env={"TERM": "x", "MY_APP_MODE": "1"})
        reason = _refusal_text(await controller.execute(unlisted))
        assert "environment variable MY_APP_MODE is not permitted by this host's policy (env: [TERM])" in reason
        assert f"add it under env: in {agent.policy} if it is safe" in reason

        elsewhere = Exec(command_id="no-2", argv=["pwd"], timeout_s=30, cwd=str(tmp_path))
        reason = _refusal_text(await controller.execute(elsewhere))
        assert f"working directory {str(tmp_path)!r} is not permitted by this host's policy" in reason

    [started] = agent.lines("agent.command_exec")
    assert started["command_id"] == "ok-1"
    assert started["decision"] == "run"
    assert started["argv"] == ["env"]
    assert started["env"] == {"TERM": "xterm-256color"}
    assert started["cwd"] == str(workdir)
    [starting] = agent.lines("agent.starting")
    assert starting["env_permitted"] == ["TERM"]
    assert starting["cwd_permitted"] == ["/", str(workdir)]


@pytest.mark.parametrize("name", ["LD_PRELOAD", "GIT_CONFIG_COUNT", "PYTHONSTARTUP"])
def test_agent_will_not_start_with_a_policy_that_permits_a_loader_variable(name: str, tmp_path: Path) -> None:
    argv, policy_file = _agent_argv("http://127.0.0.1:9", tmp_path, {"allow": ["uptime"], "env": ["TERM", name]})
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=_agent_env(), check=False
    )
    assert done.returncode == EXIT_CONFIG
    stderr = done.stderr.decode()
    assert str(policy_file) in stderr
    assert f"env[1] {name}: it controls what gets loaded or executed, so no policy can permit it" in stderr
