"""The deploy files of issue #21, checked as far as this machine allows (no container daemon runs here).

- compose.yaml parses with the three services, each with a healthcheck and a volume, and Alertmanager's
  configuration posts to TeleOps with a bearer token (`amtool check-config` on it);
- both systemd units pass `systemd-analyze verify` (with ExecStart pointed at this checkout's `teleops`, since
  /opt/teleops does not exist here) and carry the hardening keys;
- the Dockerfile's HEALTHCHECK command, run as written, passes against a real `teleops serve` and fails when
  nothing listens;
- every metric the Grafana dashboard names is a family on a real controller's /metrics;
- deploy/teleops.yaml is a valid configuration (`teleops config check`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.integration.servers import free_port, run_teleops_cli, start_teleops, stop_process

DEPLOY = Path(__file__).parents[2] / "deploy"


def test_compose_wires_teleops_postgres_and_alertmanager_with_healthchecks_and_volumes() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"teleops", "postgres", "alertmanager"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], f"{name} has no healthcheck"
        assert service["volumes"], f"{name} keeps no volume"
    assert services["teleops"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["teleops"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "postgresql+asyncpg://" in services["teleops"]["environment"]["TELEOPS_DATABASE__URL"]
    assert any(v.startswith("teleops-data:/var/lib/teleops") for v in services["teleops"]["volumes"])
    assert set(compose["volumes"]) == {"postgres-data", "teleops-data", "alertmanager-data"}
    for port in (p for s in services.values() for p in s.get("ports", [])):
        assert port.startswith("127.0.0.1:"), f"{port} is published beyond loopback"

    alertmanager = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    [receiver] = alertmanager["receivers"]
    [webhook] = receiver["webhook_configs"]
    assert webhook["url"] == "http://teleops:8080/api/v1/alerts/alertmanager"
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    mounted = [v.split(":")[1] for v in services["alertmanager"]["volumes"]]
    assert webhook["http_config"]["authorization"]["credentials_file"] in mounted


def test_alertmanager_accepts_its_configuration(tmp_path: Path) -> None:
    config = (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
    token = tmp_path / "ingest.token"
    token.write_text("tlo_example\n")
    local = tmp_path / "alertmanager.yml"
    local.write_text(config.replace("/etc/alertmanager/ingest.token", str(token)))
    checked = subprocess.run(["amtool", "check-config", str(local)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _verify_unit(tmp_path: Path, name: str) -> str:
    teleops = tmp_path / "bin" / "teleops"
    teleops.parent.mkdir(exist_ok=True)
    teleops.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m teleops.cli "$@"\n')
    teleops.chmod(0o755)
    text = (DEPLOY / name).read_text()
    unit = tmp_path / name
    unit.write_text(text.replace("/opt/teleops/bin/teleops", str(teleops)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stderr.strip() == "", verified.stderr
    return text


def test_the_controller_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    text = _verify_unit(tmp_path, "teleops.service")
    for key in (
        "DynamicUser=yes",
        "StateDirectory=teleops",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "TELEOPS_LOCAL_AGENT__ENABLED=false",
    ):
        assert key in text, key


def test_the_agent_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    text = _verify_unit(tmp_path, "teleops-agent.service")
    for key in ("User=teleops-agent", "StateDirectory=teleops-agent", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert key in text, key


def _healthcheck_argv() -> list[str]:
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", dockerfile, re.M)
    assert match, "the Dockerfile has no HEALTHCHECK CMD in exec form"
    argv: list[str] = json.loads(match.group(1))
    return argv


def test_the_image_healthcheck_passes_on_a_serving_controller_and_fails_without_one(tmp_path: Path) -> None:
    argv = _healthcheck_argv()
    assert argv[0] == "python"
    compose_check = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["teleops"]["healthcheck"]
    assert compose_check["test"] == ["CMD", *argv], "compose and the Dockerfile check health differently"
    server = start_teleops(tmp_path / "teleops")
    try:
        address = server.url.removeprefix("http://")
        command = [sys.executable, *(a.replace("127.0.0.1:8080", address) for a in argv[1:])]
        assert subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        stop_process(server.process)
    down = [sys.executable, *(a.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}") for a in argv[1:])]
    assert subprocess.run(down, capture_output=True, timeout=30, check=False).returncode != 0

    families = {re.sub(r"_total$", "", name) for name in re.findall(r"^# TYPE (teleops_\w+) ", metrics, re.M)}
    dashboard = json.loads((DEPLOY / "grafana" / "teleops-dashboard.json").read_text())
    named = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"teleops_\w+", target["expr"])
    }
    assert len(named) >= 20
    assert named <= families, f"the dashboard names metrics the controller does not have: {named - families}"


def test_the_compose_configuration_file_is_valid(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "teleops.yaml", tmp_path / "teleops.yaml")
    checked = run_teleops_cli("config", "check", "--config", str(tmp_path / "teleops.yaml"))
    assert checked.stdout.startswith("configuration OK")
