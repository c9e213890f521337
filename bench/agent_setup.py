"""A controller with one real `teleops agent` connected, and an API token that may run anything on it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import KeepAlive, build_request
from bench.process import BenchError, Server, spawn
from bench.teleops_server import TELEOPS, TeleOps, create_token, start_teleops

__all__ = ["AGENT_NAME", "AgentRig", "start_agent", "start_rig"]

AGENT_NAME = "bench-host"
TERMINAL = {"succeeded", "failed", "timed_out", "killed", "denied", "lost"}
POLICY: dict[str, object] = {"policy": {"roles": {"admin": [{"hosts": ["*"], "commands": ["*"]}]}}}


@dataclass
class AgentRig:
    teleops: TeleOps
    agent: Server
    api_token: str
    agent_token_file: Path

    def stop(self) -> None:
        self.agent.stop()
        self.teleops.server.stop()

    def command_request(self, command: str, timeout: str = "30s") -> bytes:
        body = json.dumps({"host": AGENT_NAME, "command": command, "timeout": timeout}).encode()
        auth = {"Authorization": f"Bearer {self.api_token}"}
        return build_request("POST", "127.0.0.1", self.teleops.port, "/api/v1/commands", body, auth)

    def status_request(self, command_id: int, *, wait_s: int = 30) -> bytes:
        auth = {"Authorization": f"Bearer {self.api_token}"}
        path = f"/api/v1/commands/{command_id}?wait={wait_s}"
        return build_request("GET", "127.0.0.1", self.teleops.port, path, b"", auth)

    async def run_command(self, connection: KeepAlive, command: str) -> dict[str, object]:
        """POST the command, then `GET …?wait=30` on the same connection until it ends (the documented way to
        wait: answered the moment the result is stored); its final JSON."""
        status, body = await connection.request(self.command_request(command))
        if status != 202:
            raise BenchError(f"POST /api/v1/commands answered {status}: {body[:300]!r}")
        command_id = json.loads(body)["id"]
        while True:
            status, body = await connection.request(self.status_request(command_id))
            record: dict[str, object] = json.loads(body)
            if record.get("status") in TERMINAL:
                return record


async def start_agent(teleops: TeleOps, workdir: Path, token_file: Path) -> tuple[Server, float]:
    """Start `teleops agent` and wait until the controller lists it online; (server, seconds to connected)."""
    started = time.perf_counter()
    agent = spawn(
        "teleops agent",
        [
            *TELEOPS,
            "agent",
            "--server",
            f"http://127.0.0.1:{teleops.port}",
            "--name",
            AGENT_NAME,
            "--token-file",
            str(token_file),
            "--allow-all",
            "--state-dir",
            str(workdir / "agent-state"),
            "--log-level",
            "warning",
        ],
        port=0,
        log_path=workdir / "agent.log",
    )
    return agent, started


async def _wait_online(rig_teleops: TeleOps, agent: Server, api_token: str, started: float) -> float:
    connection = await KeepAlive.open("127.0.0.1", rig_teleops.port)
    auth = {"Authorization": f"Bearer {api_token}"}
    request = build_request("GET", "127.0.0.1", rig_teleops.port, "/api/v1/agents", b"", auth)
    deadline = time.monotonic() + 30
    try:
        while True:
            agent.check_alive()
            status, body = await connection.request(request)
            if status == 200 and any(
                item.get("name") == AGENT_NAME and item.get("online") for item in json.loads(body)["items"]
            ):
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                raise BenchError(f"the agent did not come online within 30s:\n{agent.log_tail()}")
            await asyncio.sleep(0.002)
    finally:
        connection.close()


async def start_rig(workdir: Path) -> tuple[AgentRig, float]:
    """Controller (SQLite, no local agent) + one agent with --allow-all; (rig, agent start → online seconds)."""
    teleops = await start_teleops(workdir, extra_config=POLICY)
    try:
        api_token = create_token(teleops.config, "api", "bench", "--user", "admin")
        token_file = workdir / "agent.token"
        token_file.write_text(create_token(teleops.config, "agent", AGENT_NAME) + "\n")
        token_file.chmod(0o600)
        agent, started = await start_agent(teleops, workdir, token_file)
    except BaseException:
        teleops.server.stop()
        raise
    rig = AgentRig(teleops, agent, api_token, token_file)
    try:
        connected = await _wait_online(teleops, agent, api_token, started)
    except BaseException:
        rig.stop()
        raise
    return rig, connected
