"""The `teleops` command as a person uses it: real subprocesses, real files."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def teleops(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teleops.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TELEOPS_CONFIG", raising=False)
    return tmp_path


def test_config_check_accepts_the_embedded_default(workdir: Path) -> None:
    result = teleops("config", "check", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "configuration OK (embedded default)" in result.stdout


def test_bad_config_exits_78_naming_the_key(workdir: Path) -> None:
    (workdir / "teleops.yaml").write_text("server: {listen: 'nowhere'}\n")
    result = teleops("config", "check", cwd=workdir)
    assert result.returncode == 78
    assert "server.listen" in result.stderr
    assert "HOST:PORT" in result.stderr


def test_environment_config_errors_exit_78(workdir: Path) -> None:
    result = teleops("config", "check", cwd=workdir, env={"TELEOPS_DATABASE__URL": "mysql://x"})
    assert result.returncode == 78
    assert "database.url" in result.stderr


def test_config_check_refuses_a_rotation_member_who_is_not_a_user(workdir: Path) -> None:
    config = workdir / "oncall.yaml"
    config.write_text(
        "users: [{name: alice}, {name: carol}]\n"
        "oncall:\n"
        "  rotations: [{name: primary, members: [alice, carol, bob]}]\n"
        "  escalation: [{notify: rotation:primary}]\n"
    )
    result = teleops("config", "check", "--config", str(config), cwd=workdir)
    assert result.returncode == 78
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "oncall." in line]
    assert named == [
        f"{config}: oncall.rotations.0.members.2: 'bob' is not a defined user; define it under users: or fix the name"
    ]


def test_usage_errors_exit_2(workdir: Path) -> None:
    assert teleops("token", "create", "api", "x", cwd=workdir).returncode == 2  # --user missing
    assert teleops("no-such-command", cwd=workdir).returncode == 2


def test_token_create_prints_the_secret_alone_on_the_last_line(workdir: Path) -> None:
    result = teleops("token", "create", "ingest", "grafana", cwd=workdir)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("tlo_in_")
    assert len(secret) > 30
    again = teleops("token", "create", "ingest", "grafana", cwd=workdir)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    no_user = teleops("token", "create", "api", "x", "--user", "nobody", cwd=workdir)
    assert no_user.returncode == 1
    assert "no user 'nobody'" in no_user.stderr


def test_db_upgrade_is_idempotent(workdir: Path) -> None:
    for _ in range(2):
        result = teleops("db", "upgrade", cwd=workdir)
        assert result.returncode == 0, result.stderr
    assert (workdir / "teleops-data" / "teleops.db").is_file()


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[str, str, str]]:
    """`teleops serve` on the embedded default (local agent off to keep this test about ingest): its URL, the
    first-start credentials file's text, and what it printed (a pipe, not a terminal: the file's path only)."""
    port = free_port()
    env = {
        **os.environ,
        "TELEOPS_SERVER__LISTEN": f"127.0.0.1:{port}",
        "TELEOPS_LOCAL_AGENT__ENABLED": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "teleops.cli", "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        printed: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line)
            if line.startswith("First start:"):
                break
        credentials = workdir / "teleops-data" / "first-start-credentials.txt"
        assert credentials.is_file(), "".join(printed)
        yield f"http://127.0.0.1:{port}", credentials.read_text(), "".join(printed)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_first_start_credentials_go_to_a_private_file_not_the_log(served: tuple[str, str, str], workdir: Path) -> None:
    _base, banner, printed = served
    credentials = workdir / "teleops-data" / "first-start-credentials.txt"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert "teleops-data/first-start-credentials.txt (readable by this user only)" in printed, printed
    password = banner.split("Login       : admin / ")[1].split()[0]
    for secret in (
        password,
        banner.split("API token   : ")[1].split()[0],
        banner.split("Ingest token: ")[1].split()[0],
    ):
        assert secret not in printed
    for name in ("teleops.db", "argv.key"):
        assert stat.S_IMODE((workdir / "teleops-data" / name).stat().st_mode) == 0o600, name


def test_first_start_prints_a_curl_that_creates_an_incident(served: tuple[str, str, str], workdir: Path) -> None:
    base, banner, _printed = served
    assert f"Web console : {base}/ui/console" in banner
    assert "Login       : admin / " in banner
    curl = banner[banner.index("curl -sS -X POST") : banner.index("Then list incidents")]
    # Run the printed curl exactly as a person would paste it.
    result = subprocess.run(["sh", "-c", curl.strip()], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert '"outcome":"created"' in result.stdout
    api_token = banner.split("API token   : ")[1].split()[0]
    listing = httpx.get(f"{base}/api/v1/incidents", headers={"Authorization": f"Bearer {api_token}"}).json()
    assert [(i["name"], i["host"], i["status"]) for i in listing["items"]] == [("DiskFull", "localhost", "open")]


def test_simulate_replays_a_fixture_into_a_running_server(served: tuple[str, str, str], workdir: Path) -> None:
    base, banner, _printed = served
    ingest = banner.split("Ingest token: ")[1].split()[0]
    result = teleops("simulate", "alertmanager", "firing", "--server", base, "--token", ingest, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 ")
    wrong = teleops("simulate", "alertmanager", "nope", "--server", base, "--token", ingest, cwd=workdir)
    assert wrong.returncode == 1
    assert "alertmanager has: firing, grouped_two_alerts," in wrong.stderr
    denied = teleops("simulate", "alertmanager", "firing", "--server", base, "--token", "bad", cwd=workdir)
    assert denied.returncode == 1
    assert denied.stdout.startswith("401 ")
