"""A command's identity is unique across controller databases (wire/command_ids.py): an agent that served
one controller, then serves another (or the same one restored from an older backup), runs the new
controller's command 1 although it remembers having run the first one's command 1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from tests.integration.servers import TeleopsServer, eventually, stop_process


def _agent(server: TeleopsServer, folder: Path, state: Path) -> subprocess.Popen[bytes]:
    folder.mkdir()
    token_file, policy = folder / "token", folder / "policy.yaml"
    token_file.write_text(server.create_token("agent", "web-1") + "\n")
    token_file.chmod(0o600)
    policy.write_text(yaml.safe_dump({"allow": ["echo *"]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    argv = [sys.executable, "-m", "teleops", "agent", "--server", server.url, "--name", "web-1"]
    argv += ["--token-file", str(token_file), "--policy", str(policy), "--state-dir", str(state)]
    with (folder / "agent.log").open("wb") as out:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _run(server: TeleopsServer, agent: subprocess.Popen[bytes], text: str) -> dict[str, object]:
    def online() -> bool:
        assert agent.poll() is None
        items = httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers, timeout=10).json()["items"]
        return any(item["name"] == "web-1" and item["online"] for item in items)

    eventually(online, what="web-1 to connect")
    posted = httpx.post(
        f"{server.url}/api/v1/commands",
        json={"host": "web-1", "command": f"echo {text}"},
        headers=server.api_headers,
        timeout=10,
    )
    assert posted.status_code == 202, posted.text
    result: dict[str, object] = httpx.get(
        f"{server.url}/api/v1/commands/{posted.json()['id']}",
        params={"wait": 30},
        headers=server.api_headers,
        timeout=40,
    ).json()
    return result


def test_an_agent_that_served_another_controller_runs_the_new_ones_command_with_the_same_row_id(
    teleops_server: Callable[..., TeleopsServer], tmp_path: Path
) -> None:
    state = tmp_path / "agent-state"  # the agent's memory of the command ids it accepted
    first_server = teleops_server()
    first = _agent(first_server, tmp_path / "a", state)
    try:
        done = _run(first_server, first, "first")
        assert (done["id"], done["status"], done["output"]) == (1, "succeeded", "first\n")
    finally:
        stop_process(first)
    stop_process(first_server.process)

    second_server = teleops_server()  # a new database: its row ids start at 1 again
    second = _agent(second_server, tmp_path / "b", state)
    try:
        done = _run(second_server, second, "second")
        assert (done["id"], done["status"], done["output"]) == (1, "succeeded", "second\n"), done
    finally:
        stop_process(second)
