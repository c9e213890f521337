"""A command's identity is unique across controller databases (wire/command_ids.py): an agent that served
one controller, then serves another (or the same one restored from an older backup), runs the new
controller's command 1 although it remembers having run the first one's command 1."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.integration.servers import TeleopsServer, agent_online, eventually, start_agent, stop_process


def _run(server: TeleopsServer, agent: subprocess.Popen[bytes], text: str) -> dict[str, object]:
    eventually(lambda: agent_online(server, "web-1", agent), what="web-1 to connect")
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
    first = start_agent(first_server, "web-1", tmp_path / "a", allow=("echo *",), state_dir=state)
    try:
        done = _run(first_server, first, "first")
        assert (done["id"], done["status"], done["output"]) == (1, "succeeded", "first\n")
    finally:
        stop_process(first)
    stop_process(first_server.process)

    second_server = teleops_server()  # a new database: its row ids start at 1 again
    second = start_agent(second_server, "web-1", tmp_path / "b", allow=("echo *",), state_dir=state)
    try:
        done = _run(second_server, second, "second")
        assert (done["id"], done["status"], done["output"]) == (1, "succeeded", "second\n"), done
    finally:
        stop_process(second)
