"""docs/install-agent.md step 2, command by command: the wheel built from the checkout and requirements/
agent.lock, installed into fresh venvs of Debian's /usr/bin/python3 — once from the package index, once from a
downloaded folder with no index — hold only what `teleops agent` imports (no web framework, ORM, templates or
chat SDK), and the offline-installed agent connects to a real controller and runs a command."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.install_commands import AGENT_INSTALL, AGENT_INSTALL_OFFLINE, WHEEL_INSTALL, for_test
from tests.integration.servers import TeleopsServer, agent_online, eventually, start_agent, stop_process

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = "/usr/bin/python3"
# The controller's dependencies; none may be installed beside the agent (it runs as root on every host).
CONTROLLER_ONLY = {
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "jinja2", "httpx",
    "python-telegram-bot", "slack-bolt", "slack-sdk", "aiohttp", "asyncssh", "pydantic-settings", "cryptography",
}  # fmt: skip


def _run(argv: list[str], *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _installed(venv: Path) -> set[str]:
    listed = _run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"]).stdout
    return {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in listed.splitlines()}


def _host_files(tmp_path: Path) -> Path:
    """What `scripts/wheel` and `scp ... web-1:/tmp/` leave on the server: the wheel and agent.lock."""
    built = _run(for_test(WHEEL_INSTALL[0], {})).stdout.strip().splitlines()[-1]
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    shutil.copy2(ROOT / built, host_tmp)
    shutil.copy2(ROOT / "dist" / "agent.lock", host_tmp)
    return host_tmp


def test_the_documented_agent_installs_hold_only_what_the_agent_imports_and_the_agent_runs_a_command(
    tmp_path: Path, teleops_server: Callable[..., TeleopsServer]
) -> None:
    host_tmp = _host_files(tmp_path)
    make_venv, from_index, the_wheel = AGENT_INSTALL
    download, from_folder = AGENT_INSTALL_OFFLINE

    online = tmp_path / "online"
    paths = {"/opt/teleops": str(online), "/tmp/": f"{host_tmp}/"}
    for step in (make_venv, from_index, the_wheel):
        _run(for_test(step, paths))

    offline = tmp_path / "offline"
    wheels = tmp_path / "agent-wheels"
    _run(for_test(download, {"agent-wheels/": f"{wheels}/"}, python=str(online / "bin" / "python")))
    paths = {"/opt/teleops": str(offline), "/tmp/agent-wheels": str(wheels), "/tmp/": f"{host_tmp}/"}
    for step in (make_venv, from_folder, the_wheel):
        _run(for_test(step, paths))

    for venv in (online, offline):
        installed = _installed(venv)
        assert "teleops" in installed
        assert {"click", "pydantic", "pyyaml", "structlog", "websockets"} <= installed
        assert not installed & CONTROLLER_ONLY, f"{venv.name}: {sorted(installed & CONTROLLER_ONLY)}"

    server = teleops_server()
    program = (str(offline / "bin" / "teleops"),)
    agent = start_agent(server, "web-9", tmp_path / "web-9", allow=("uname *",), program=program)
    log = tmp_path / "web-9" / "agent.log"
    try:
        eventually(lambda: agent_online(server, "web-9", agent), what="the installed agent to connect")
        posted = httpx.post(
            f"{server.url}/api/v1/commands",
            json={"host": "web-9", "command": "uname -s"},
            headers=server.api_headers,
            timeout=10,
        )
        assert posted.status_code == 202, posted.text
        done = httpx.get(
            f"{server.url}/api/v1/commands/{posted.json()['id']}",
            params={"wait": 30},
            headers=server.api_headers,
            timeout=40,
        ).json()
        assert (done["status"], done["output"]) == ("succeeded", "Linux\n"), done
    finally:
        stop_process(agent)
    assert "Traceback" not in log.read_text()
