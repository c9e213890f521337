"""Runbooks: typed parameters bound from alert labels; a label that fails its check never becomes argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from teleops.memory.runbooks import RunbookError, bind, load_runbooks, parse_runbook

NGINX: dict[str, Any] = {
    "alert": "NginxDown",
    "description": "nginx stopped answering",
    "params": {
        "service": {"label": "service", "regex": "^[a-z][a-z0-9@._-]{0,63}$"},
        "signal": {"label": "signal", "enum": ["HUP", "TERM"]},
    },
    "diagnostics": [{"name": "status", "command": ["systemctl", "status", "{service}"], "auto": True}],
    "fixes": [
        {"name": "restart", "command": ["systemctl", "restart", "{service}"]},
        {"name": "signal", "command": ["pkill", "--signal", "{signal}", "nginx"]},
    ],
}


def test_valid_labels_fill_whole_arguments() -> None:
    runbook = parse_runbook(NGINX, where="test")
    bound = bind(runbook, runbook.fixes[0], {"service": "nginx@main.service"})
    assert bound.argv == ("systemctl", "restart", "nginx@main.service")
    assert bound.unavailable is None
    assert bind(runbook, runbook.fixes[1], {"signal": "HUP"}).argv == ("pkill", "--signal", "HUP", "nginx")


# The security suite's injection shapes: shell metacharacters, command substitution, options, newlines.
@pytest.mark.parametrize(
    "value",
    [
        "nginx; reboot",
        "$(id)",
        "`id`",
        "-rf",
        "--help",
        "nginx\nreboot",
        "nginx\rreboot",
        "nginx reboot",
        "nginx\x00",
        "nginx|sh",
        "nginx&&reboot",
        "../../etc/passwd",
        "NGINX",
        "",
        "n" * 300,
    ],
)
def test_a_label_that_fails_its_check_makes_the_suggestion_unavailable(value: str) -> None:
    runbook = parse_runbook(NGINX, where="test")
    bound = bind(runbook, runbook.fixes[0], {"service": value})
    assert bound.argv is None
    assert bound.unavailable


@pytest.mark.parametrize("value", ["KILL", "HUP; reboot", "-9", "hup"])
def test_enum_parameters_accept_only_listed_values(value: str) -> None:
    runbook = parse_runbook(NGINX, where="test")
    assert bind(runbook, runbook.fixes[1], {"signal": value}).argv is None


def test_a_missing_label_makes_the_suggestion_unavailable() -> None:
    runbook = parse_runbook(NGINX, where="test")
    bound = bind(runbook, runbook.diagnostics[0], {"instance": "web-1"})
    assert bound.argv is None
    assert bound.unavailable == "the alert has no 'service' label"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fixes": [{"command": ["systemctl", "restart", "--unit={service}"]}]}, "whole argument"),
        ({"fixes": [{"command": ["systemctl", "restart", "{nope}"]}]}, "names no parameter"),
        ({"fixes": [{"command": "systemctl restart nginx"}]}, "argv list"),
        ({"fixes": [{"command": ["reboot"], "auto": True}]}, "never fixes"),
        ({"params": {"service": {"label": "service"}}}, "exactly one of"),
        ({"params": {"service": {"label": "service", "regex": "("}}}, "not a regular expression"),
    ],
)
def test_unsafe_or_unclear_runbooks_are_refused_at_load(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RunbookError, match=message):
        parse_runbook({**NGINX, **change}, where="runbooks/nginx.yaml")


def test_load_reads_a_folder_by_alert_name(tmp_path: Path) -> None:
    (tmp_path / "nginx.yaml").write_text("alert: NginxDown\nfixes:\n  - command: [systemctl, restart, nginx]\n")
    (tmp_path / "disk.yml").write_text("alert: DiskFull\ndiagnostics:\n  - {command: [df, -h], auto: true}\n")
    runbooks = load_runbooks(tmp_path)
    assert sorted(runbooks) == ["DiskFull", "NginxDown"]
    assert runbooks["DiskFull"].diagnostics[0].auto
    assert load_runbooks(tmp_path / "missing") == {}
    (tmp_path / "again.yaml").write_text("alert: NginxDown\n")
    with pytest.raises(RunbookError, match="already has a runbook"):
        load_runbooks(tmp_path)


def test_the_example_runbooks_load() -> None:
    runbooks = load_runbooks(Path(__file__).parents[3] / "runbooks")
    assert runbooks, "the example runbooks/ folder is empty"
