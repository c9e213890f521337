"""An agent killed with SIGKILL mid-command leaves its command running (nothing else enforces the timeout);
started again with the same state directory, it finds the command in its cgroup, kills it, and reports it, so
the command ends `killed` saying why instead of `lost`, and no process of it is left (docs/threat-model.md F08, F11)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.servers import TeleopsServer, agent_online, eventually, start_agent, stop_process


def _sleepers(seconds: str) -> list[int]:
    """Pids of `sleep SECONDS` processes (a number no other test uses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", seconds.encode()]:
                found.append(int(entry.name))
    return found


def test_a_restarted_agent_kills_what_its_killed_predecessor_left_running(
    teleops_server: Callable[..., TeleopsServer], tmp_path: Path
) -> None:
    server = teleops_server()
    state, token = tmp_path / "state", server.create_token("agent", "web-1")
    first = start_agent(server, "web-1", tmp_path / "first", allow=("sleep *",), state_dir=state, token=token)
    second = None
    try:
        eventually(lambda: agent_online(server, "web-1", first), what="web-1 to connect")
        posted = httpx.post(
            f"{server.url}/api/v1/commands",
            json={"host": "web-1", "command": "sleep 317", "timeout": 600},
            headers=server.api_headers,
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        command_id = posted.json()["id"]
        running = eventually(lambda: _sleepers("317"), what="the command to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert _sleepers("317") == running  # nothing killed it: the agent is gone

        second = start_agent(server, "web-1", tmp_path / "second", allow=("sleep *",), state_dir=state, token=token)
        eventually(lambda: not _sleepers("317"), what="the restarted agent to kill the orphan", timeout=30)
        done = httpx.get(
            f"{server.url}/api/v1/commands/{command_id}", params={"wait": 30}, headers=server.api_headers, timeout=40
        ).json()
        assert done["status"] == "killed", done
        assert "the agent stopped while this command ran" in done["output"]
        assert "agent.orphan_killed" in (tmp_path / "second" / "agent.log").read_text()
    finally:
        for process in (first, second):
            if process is not None:
                stop_process(process)
        for pid in _sleepers("317"):  # only if the test failed: ours, by its unique argument
            os.kill(pid, signal.SIGKILL)
