"""Remote execution end to end: a real `teleops serve`, real `teleops agent` processes, loopback only.

What is real: the controller subprocess, the agent subprocesses started with the documented command line,
the WebSocket between them (through a real TCP proxy where the link must break), and the commands run.
Waiting is always polling with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.servers import TeleopsServer, eventually, stop_process, wait_until
from tests.integration.tcp_proxy import running_proxy

T = TypeVar("T")

POLICY = {"allow": ["uname *", "echo *", "sleep *", "ls *"]}
TERMINAL = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}


@dataclass
class AgentProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    state_dir: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


AgentFactory = Callable[..., AgentProcess]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[AgentFactory]:
    """Starts `teleops agent --server URL --name NAME --token-file FILE --policy FILE` (docs/architecture.md, "Public surface")."""
    started: list[AgentProcess] = []

    def start(
        server_url: str, name: str, token: str, *, state_dir: Path | None = None, allow: tuple[str, ...] = ()
    ) -> AgentProcess:
        folder = tmp_path / f"agent-{name}-{len(started)}"
        folder.mkdir()
        token_file = folder / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        policy_file = folder / "policy.yaml"
        # The test's own scripts live under pytest's root-only temporary directory: they run as root, named so.
        scripts = [{"command": pattern, "run_as": "root"} for pattern in allow]
        policy_file.write_text(yaml.safe_dump({"allow": [*POLICY["allow"], *scripts]}))
        state = state_dir or folder / "state"
        log = folder / "agent.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
        argv = [sys.executable, "-m", "teleops", "agent", "--server", server_url, "--name", name]
        argv += ["--token-file", str(token_file), "--policy", str(policy_file), "--state-dir", str(state)]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        agent = AgentProcess(name, process, log, state)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop_process(agent.process)


def _get(server: TeleopsServer, path: str) -> Any:
    response = httpx.get(f"{server.url}{path}", headers=server.api_headers, timeout=10)
    response.raise_for_status()
    return response.json()


def post_command(server: TeleopsServer, host: str, command: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/commands",
        json={"host": host, "command": command, **extra},
        headers=server.api_headers,
        timeout=10,
    )


def run_command(server: TeleopsServer, host: str, command: str, **extra: Any) -> int:
    response = post_command(server, host, command, **extra)
    assert response.status_code == 202, response.text
    command_id: int = response.json()["id"]
    return command_id


def command(server: TeleopsServer, command_id: int) -> dict[str, Any]:
    result: dict[str, Any] = _get(server, f"/api/v1/commands/{command_id}")
    return result


def final(server: TeleopsServer, command_id: int, timeout: float = 30.0) -> dict[str, Any]:
    return eventually(
        lambda: c if (c := command(server, command_id))["status"] in TERMINAL else None,
        what=f"command {command_id} to finish",
        timeout=timeout,
    )


def agent_online(server: TeleopsServer, name: str) -> dict[str, Any] | None:
    for item in _get(server, "/api/v1/agents")["items"]:
        if item["name"] == name and item["online"]:
            return dict(item)
    return None


def connected_agent(server: TeleopsServer, agent: AgentProcess) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        if agent.process.poll() is not None:
            pytest.fail(f"agent exited with {agent.process.returncode}:\n{agent.text()[-3000:]}")
        return agent_online(server, agent.name)

    return eventually(check, what=f"agent {agent.name} to connect")


def restart_controller(server: TeleopsServer) -> None:
    stop_process(server.process)
    with server.log.open("ab") as out:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "teleops", "serve", "--config", str(server.config_path)],
            cwd=server.config_path.parent,
            env=server.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(
        lambda: httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200,
        what="restarted teleops serve",
        process=server.process,
        log=server.log,
    )


@contextlib.contextmanager
def raw_agent(server: TeleopsServer, name: str) -> Iterator[ClientConnection]:
    """A hand-driven agent connection (token created, hello answered with welcome): for frames a real agent never
    sends, or results it never reports."""
    token = server.create_token("agent", name)
    url = server.url.replace("http://", "ws://") + "/api/v1/agent/ws"
    hello = {"v": 1, "type": "hello", "agent": name, "hostname": name, "version": "0"}
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as websocket:
        websocket.send(json.dumps(hello))
        assert json.loads(websocket.recv(timeout=10))["type"] == "welcome"
        yield websocket


def script(path: Path, body: str) -> Path:
    """An executable shell script: the command under test without granting anyone `sh -c`."""
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def log_count(text: str, event: str, command_id: int) -> int:
    return sum(1 for line in text.splitlines() if event in line and re.search(rf"command_id={command_id}\b", line))


# --- the embedded default --------------------------------------------------------------------------


def test_embedded_local_agent_runs_uname_and_returns_its_real_output(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    server = teleops_server(local_agent=True)
    eventually(lambda: agent_online(server, "localhost"), what="the embedded local agent to connect")

    command_id = run_command(server, "localhost", "uname -a")
    waited = httpx.get(f"{server.url}/api/v1/commands/{command_id}?wait=20", headers=server.api_headers, timeout=30)
    result = waited.json()

    expected = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True).stdout
    assert result["status"] == "succeeded", result
    assert result["exit_code"] == 0
    assert result["output"] == expected
    assert result["argv"] == ["uname", "-a"]
    assert result["requester"] == "admin"
    assert result["finished_at"] is not None
    assert result["started_at"] is not None  # arrived with the result, not as a write of its own
    token_file = server.data_dir / "local-agent.token"
    assert token_file.stat().st_mode & 0o777 == 0o600


def test_bad_command_lines_and_unknown_hosts_are_refused_before_anything_runs(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    server = teleops_server(local_agent=True)
    eventually(lambda: agent_online(server, "localhost"), what="the embedded local agent to connect")

    unbalanced = post_command(server, "localhost", "echo 'oops")
    assert unbalanced.status_code == 422
    assert "unbalanced quote" in unbalanced.json()["detail"]
    empty = post_command(server, "localhost", "   ")
    assert empty.status_code == 422
    assert "empty" in empty.json()["detail"]
    unknown = post_command(server, "db-9", "uptime")
    assert unknown.status_code == 404
    assert "db-9" in unknown.json()["detail"]
    assert "known hosts: localhost" in unknown.json()["detail"]


def test_local_agent_is_restarted_when_it_dies(teleops_server: Callable[..., TeleopsServer]) -> None:
    server = teleops_server(local_agent=True)
    eventually(lambda: agent_online(server, "localhost"), what="the embedded local agent to connect")
    pid_line = eventually(
        lambda: re.search(r"local_agent.started\s+name=localhost pid=(\d+)", server.log.read_text()),
        what="the supervisor to log the child pid",
    )
    first_pid = int(pid_line.group(1))
    os.kill(first_pid, 9)  # the child this server started for this test

    eventually(
        lambda: len(re.findall(r"local_agent.started", server.log.read_text())) >= 2,
        what="the supervisor to restart the local agent",
    )
    eventually(lambda: agent_online(server, "localhost"), what="the restarted local agent to connect")
    assert final(server, run_command(server, "localhost", "echo again"))["output"] == "again\n"


def test_a_local_agent_command_killed_by_the_controller_shutting_down_ends_killed_with_that_reason(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    """The controller stops its embedded agent when it stops, and that agent kills what it runs: the controller
    knows, so it records `killed` and why, rather than the next start finding the command gone (`lost`)."""
    server = teleops_server(local_agent=True)
    eventually(lambda: agent_online(server, "localhost"), what="the embedded local agent to connect")
    alert = httpx.post(
        f"{server.url}/api/v1/alerts/generic",
        json={"summary": "Disk full", "host": "localhost", "check": "DiskFull", "severity": "critical"},
        headers=server.ingest_headers,
        timeout=10,
    )
    assert alert.status_code < 300, alert.text
    incident_id = alert.json()["results"][0]["incident_id"]
    command_id = run_command(server, "localhost", "sleep 60", timeout=120, incident_id=incident_id)
    eventually(lambda: command(server, command_id)["started_at"], what="the local agent to start the command")

    restart_controller(server)  # SIGTERM, then `teleops serve` again on the same data dir

    result = final(server, command_id)
    assert result["status"] == "killed", result
    assert result["reason"].startswith("killed: the controller shut down"), result["reason"]
    assert result["finished_at"] is not None
    finished = _get(server, f"/api/v1/incidents/{incident_id}")["timeline"][-1]
    assert finished["kind"] == "command.finished"
    assert (finished["data"]["command_id"], finished["data"]["status"]) == (command_id, "killed")
    assert finished["data"]["reason"] == result["reason"]
    eventually(lambda: agent_online(server, "localhost"), what="the local agent to connect after the restart")
    assert command(server, command_id)["status"] == "killed"  # its reconnect does not turn it into `lost`


# --- a remote agent --------------------------------------------------------------------------------


def test_remote_agent_started_with_the_documented_command_connects_and_runs_commands(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory
) -> None:
    server = teleops_server()
    token = server.create_token("agent", "web-1")
    agent = start_agent(server.url, "web-1", token)
    listed = connected_agent(server, agent)
    assert listed["hostname"] == os.uname().nodename

    missing = final(server, run_command(server, "web-1", "ls /no-such-dir-for-teleops"))
    assert missing["status"] == "failed"
    assert missing["exit_code"] == 2
    assert "/no-such-dir-for-teleops" in missing["output"]

    by_hostname = final(server, run_command(server, os.uname().nodename, "echo via hostname"))
    assert (by_hostname["status"], by_hostname["output"]) == ("succeeded", "via hostname\n")

    refused = final(server, run_command(server, "web-1", "id"))
    assert refused["status"] == "denied"
    assert "allowlist" in refused["reason"]
    assert refused["exit_code"] is None
    eventually(lambda: "agent.command_refused" in agent.text(), what="the agent to log the refusal locally")

    timed_out = final(server, run_command(server, "web-1", "sleep 30", timeout=1))
    assert timed_out["status"] == "timed_out"
    assert timed_out["exit_code"] == 124

    long_id = run_command(server, "web-1", "sleep 60", timeout=120)
    eventually(lambda: command(server, long_id)["started_at"], what="the agent to start the command")
    cancel = httpx.post(f"{server.url}/api/v1/commands/{long_id}/cancel", headers=server.api_headers, timeout=10)
    assert cancel.status_code == 202, cancel.text
    cancelled = final(server, long_id)
    assert cancelled["status"] == "killed"
    assert cancelled["reason"] == "cancelled on request; the process group was killed"
    again = httpx.post(f"{server.url}/api/v1/commands/{long_id}/cancel", headers=server.api_headers, timeout=10)
    assert again.status_code == 409
    assert "already ended (killed)" in again.json()["detail"]


def test_a_command_on_an_incident_adds_requested_and_finished_to_its_timeline(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory
) -> None:
    server = teleops_server()
    agent = start_agent(server.url, "web-1", server.create_token("agent", "web-1"))
    connected_agent(server, agent)
    alert = httpx.post(
        f"{server.url}/api/v1/alerts/generic",
        json={"summary": "Disk full", "host": "web-1", "check": "DiskFull", "severity": "critical"},
        headers=server.ingest_headers,
        timeout=10,
    )
    assert alert.status_code < 300, alert.text
    incident_id = alert.json()["results"][0]["incident_id"]

    result = final(server, run_command(server, "web-1", "echo cleaned", incident_id=incident_id))

    timeline = _get(server, f"/api/v1/incidents/{incident_id}")["timeline"]
    kinds = [event["kind"] for event in timeline]
    assert kinds[-2:] == ["command.requested", "command.finished"]
    finished = timeline[-1]["data"]
    assert finished["argv"] == ["echo", "cleaned"]
    assert finished["host"] == "web-1"
    assert finished["exit_code"] == 0
    assert finished["output_excerpt"] == "cleaned\n"
    assert finished["command_id"] == result["id"]
    assert finished["duration_s"] is not None


def test_wrong_revoked_and_misnamed_tokens_are_refused_with_clear_logs(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory
) -> None:
    server = teleops_server(config={"agents": {"heartbeat": "1s"}})
    wrong = start_agent(server.url, "web-1", "tlo_ag_not-a-real-token")
    eventually(lambda: "invalid or revoked" in wrong.text(), what="the agent to log the refusal")
    assert "the controller refused this agent" in wrong.text()
    eventually(lambda: "agent.refused" in server.log.read_text(), what="the controller to log the refusal")
    assert agent_online(server, "web-1") is None

    token = server.create_token("agent", "web-2")
    misnamed = start_agent(server.url, "web-3", token)
    eventually(lambda: "belongs to agent 'web-2'" in misnamed.text(), what="the name mismatch to be logged")
    assert agent_online(server, "web-3") is None

    good = start_agent(server.url, "web-2", token)
    connected_agent(server, good)
    server.cli("token", "revoke", "agent", "web-2")
    eventually(lambda: "invalid or revoked" in good.text(), what="the live session of a revoked token to end")
    eventually(lambda: agent_online(server, "web-2") is None, what="the revoked agent to show offline")
    stop_process(good.process)
    again = start_agent(server.url, "web-2", token)
    eventually(lambda: "invalid or revoked" in again.text(), what="the revoked token to be refused")
    assert "agent.connected" not in again.text()


# --- faults ----------------------------------------------------------------------------------------


def test_agent_killed_mid_command_ends_lost_after_the_grace(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory
) -> None:
    server = teleops_server(config={"agents": {"lost_after": "1s", "heartbeat": "1s"}})
    agent = start_agent(server.url, "web-1", server.create_token("agent", "web-1"))
    connected_agent(server, agent)
    command_id = run_command(server, "web-1", "sleep 2", timeout=3)  # exits by itself: nothing left behind
    eventually(lambda: command(server, command_id)["started_at"], what="the agent to start the command")

    agent.process.kill()
    agent.process.wait()

    result = final(server, command_id)
    assert result["status"] == "lost"
    assert "agent web-1 unreachable since" in result["reason"]
    assert "outcome unknown" in result["reason"]
    assert eventually(lambda: agent_online(server, "web-1") is None, what="the agent to show offline")


def test_network_cut_mid_command_delivers_the_result_once_after_reconnect(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory, tmp_path: Path
) -> None:
    server = teleops_server()
    port = int(server.url.rsplit(":", 1)[1])
    runs = tmp_path / "runs.txt"
    job = script(tmp_path / "job.sh", f"echo run >> {runs}; echo start; sleep 1; echo done")
    with running_proxy("127.0.0.1", port) as proxy:
        agent = start_agent(proxy.url, "web-1", server.create_token("agent", "web-1"), allow=(str(job),))
        connected_agent(server, agent)
        command_id = run_command(server, "web-1", str(job))
        eventually(lambda: command(server, command_id)["started_at"], what="the agent to start the command")

        proxy.cut()
        results = agent.state_dir / "results"  # one file per result, named by the wire id `<row id>.<created>`
        spooled = eventually(
            lambda: next(iter(results.glob(f"{command_id}.*.json")), None),
            what="the agent to spool the result while the link is down",
        )
        assert command(server, command_id)["status"] == "running"  # the controller does not guess
        proxy.restore()

        result = final(server, command_id)
        assert result["status"] == "succeeded"
        assert result["output"] == "start\ndone\n"
        assert result["reason"] == "result reported after the agent reconnected"
        eventually(lambda: not spooled.exists(), what="the agent to drop the acknowledged result")

    assert runs.read_text() == "run\n"  # ran exactly once
    assert log_count(agent.text(), "agent.command_started", command_id) == 1
    assert log_count(server.log.read_text(), "command.finished", command_id) == 1


def test_controller_restart_mid_command_is_reconciled_when_the_agent_reconnects(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory, tmp_path: Path
) -> None:
    server = teleops_server()
    runs = tmp_path / "runs.txt"
    job = script(tmp_path / "job.sh", f"echo run >> {runs}; sleep 2; echo done")
    agent = start_agent(server.url, "web-1", server.create_token("agent", "web-1"), allow=(str(job),))
    connected_agent(server, agent)
    command_id = run_command(server, "web-1", str(job))
    eventually(lambda: command(server, command_id)["started_at"], what="the agent to start the command")

    restart_controller(server)

    result = final(server, command_id)
    assert result["status"] == "succeeded"
    assert result["output"] == "done\n"
    assert runs.read_text() == "run\n"
    assert log_count(agent.text(), "agent.command_started", command_id) == 1


def test_a_connected_agent_that_never_reports_a_started_command_gets_it_ended_lost_then_a_late_result_wins(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    """An agent that stays connected but loses a command (a bug, a result the database refused): the command
    must not stay `running` forever. The real result, if it ever comes, replaces `lost`."""
    server = teleops_server(config={"agents": {"lost_after": "1s", "heartbeat": "1s"}})
    with raw_agent(server, "raw-2") as websocket:
        command_id = run_command(server, "raw-2", "sleep 30", timeout=1)
        while True:  # answer heartbeats; say the command started, then never report it
            frame = json.loads(websocket.recv(timeout=10))
            if frame["type"] == "ping":
                websocket.send(json.dumps({"v": 1, "type": "pong", "nonce": frame["nonce"]}))
            elif frame["type"] == "exec":
                websocket.send(json.dumps({"v": 1, "type": "started", "command_id": frame["command_id"], "pid": 1}))
                break
        deadline = time.monotonic() + 20
        while (current := command(server, command_id))["status"] == "running" and time.monotonic() < deadline:
            try:
                frame = json.loads(websocket.recv(timeout=0.2))
            except TimeoutError:
                continue
            if frame["type"] == "ping":
                websocket.send(json.dumps({"v": 1, "type": "pong", "nonce": frame["nonce"]}))
        assert current["status"] == "lost"
        assert "agent raw-2 is connected but sent no result within the 1 s timeout" in current["reason"]
        assert agent_online(server, "raw-2") is not None

        websocket.send(json.dumps({"v": 1, "type": "exit", "command_id": str(command_id), "exit_code": 0}))
        late = eventually(lambda: (c := command(server, command_id))["status"] != "lost" and c, what="the late result")
    assert late["status"] == "succeeded"


def test_malformed_frames_are_answered_then_the_connection_is_closed_and_the_controller_lives_on(
    teleops_server: Callable[..., TeleopsServer],
) -> None:
    server = teleops_server()
    with raw_agent(server, "raw-1") as websocket:
        frames = [
            "not json",
            json.dumps({"v": 1, "type": "__class__"}),
            json.dumps({"v": 1, "type": "exec", "command_id": "1", "argv": ["ls"], "timeout_s": 5}),
        ]
        errors = []
        for frame in frames:
            websocket.send(frame)
            errors.append(json.loads(websocket.recv(timeout=10)))
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=10)
    assert [e["type"] for e in errors] == ["error", "error", "error"]
    assert "not valid JSON" in errors[0]["message"]
    assert "unknown message type '__class__'" in errors[1]["message"]
    assert "is not sent by agents" in errors[2]["message"]
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200


# --- one command on many hosts ----------------------------------------------------------------------


def test_a_batch_runs_once_per_host_and_reports_each_host_on_its_own(
    teleops_server: Callable[..., TeleopsServer], start_agent: AgentFactory
) -> None:
    policy = {"policy": {"roles": {"admin": [{"hosts": ["web-*"], "commands": ["*"]}]}}}
    server = teleops_server(config=policy)
    agents = [start_agent(server.url, name, server.create_token("agent", name)) for name in ("web-1", "web-2", "db-1")]
    for agent in agents:
        connected_agent(server, agent)

    hosts = ["web-1", "web-2", "db-1", "nowhere"]
    response = httpx.post(
        f"{server.url}/api/v1/commands/batch",
        json={"hosts": hosts, "command": "echo fanned"},
        headers=server.api_headers,
        timeout=10,
    )
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [item["host"] for item in items] == hosts
    web = [item["command"]["id"] for item in items[:2]]
    denied = items[2]["command"]
    assert denied["status"] == "denied"  # recorded and audited, never sent
    assert items[3]["command"] is None
    assert "known hosts" in items[3]["error"]

    ids = ",".join(str(i) for i in [*web, denied["id"]])
    waited = httpx.get(f"{server.url}/api/v1/commands?ids={ids}&wait=20", headers=server.api_headers, timeout=30)
    assert waited.status_code == 200, waited.text
    done = waited.json()["items"]
    assert [c["id"] for c in done] == [*web, denied["id"]]
    assert [(c["status"], c["output"], c["agent"]) for c in done[:2]] == [
        ("succeeded", "fanned\n", "web-1"),
        ("succeeded", "fanned\n", "web-2"),
    ]
    for agent, command_id in zip(agents[:2], web, strict=True):
        assert log_count(agent.text(), "agent.command_started", command_id) == 1  # each ran its own, once
    assert "agent.command_started" not in agents[2].text()  # the denied host never heard of it

    before = _get(server, "/api/v1/commands?limit=1000")["items"]
    for bad in (
        {"hosts": ["web-1", "web-1"], "command": "echo x"},  # listed twice
        {"hosts": [" "], "command": "echo x"},
        {"hosts": [], "command": "echo x"},
        {"hosts": ["w" * 256], "command": "echo x"},
        {"hosts": ["web-1"], "command": "echo 'unbalanced"},
        {"hosts": ["web-1"], "command": "echo x", "timeout": "forever"},
    ):
        refused = httpx.post(f"{server.url}/api/v1/commands/batch", json=bad, headers=server.api_headers, timeout=10)
        assert refused.status_code == 422, (bad, refused.text)
    for query, status in (("ids=999999", 404), ("ids=1,x", 422), ("ids=", 422), (f"ids={2**70}", 422)):
        answer = httpx.get(f"{server.url}/api/v1/commands?{query}", headers=server.api_headers, timeout=10)
        assert answer.status_code == status, (query, answer.text)
    assert _get(server, "/api/v1/commands?limit=1000")["items"] == before  # bad input changed nothing
