"""Policy loading (no partial policy, errors name the key) and the shell-syntax scanner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from teleops.config import ConfigError, load_settings
from teleops.domain.policy import shell_syntax, starts_shell


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("policy: {roles: {ops: [{hosts: ['*'], commands: ['']}]}}", "policy.roles.ops.0.commands.0"),
        ("policy: {roles: {ops: [{hosts: ['*'], commands: ['x'], colour: red}]}}", "policy.roles.ops.0.colour"),
        ("policy: {roles: {ops: [{hosts: [], commands: ['x']}]}}", "policy.roles.ops.0.hosts"),
        ("policy: {roles: {ops: [{hosts: ['*'], commands: ['x \"']}]}}", "policy.roles.ops.0.commands.0"),
        ("policy: {roles: {ops: [{hosts: ['web *'], commands: ['x']}]}}", "policy.roles.ops.0.hosts.0"),
        (
            "policy: {roles: {ops: [{hosts: ['*'], commands: ['x'], max_timeout: soon}]}}",
            "policy.roles.ops.0.max_timeout",
        ),
        (
            "users: [{name: bob, role: ops}]\npolicy: {roles: {admin: [{hosts: ['*'], commands: ['*']}]}}",
            "users.0.role",
        ),
    ],
)
def test_an_invalid_policy_refuses_to_load_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "teleops.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"{path}: {key}\b"):
        load_settings(path)


def test_serve_exits_78_on_an_invalid_policy(tmp_path: Path) -> None:
    path = tmp_path / "teleops.yaml"
    path.write_text("users: [{name: bob, role: ghost}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "teleops.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert "users.0.role" in done.stderr


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("uptime", None),
        ("echo 'a;b|c&&d'", None),
        ("echo a\\;b", None),
        ("echo '$(id)'", None),
        ("uptime;id", ";"),
        ("a && b", "&&"),
        ("a || b", "||"),
        ("a | b", "|"),
        ("a & ", "&"),
        ("a > f", ">"),
        ("cat < f", "<"),
        ('echo "$(id)"', "$("),
        ('echo "`id`"', "a backtick"),
        ("echo 'x\ny'", "a newline"),
    ],
)
def test_shell_syntax_is_found_outside_quotes(text: str, found: str | None) -> None:
    assert shell_syntax(text) == found


@pytest.mark.parametrize(
    ("argv", "shell"),
    [
        (["sh", "-c", "x"], True),
        (["/usr/bin/bash", "-lc", "x"], True),
        (["sudo", "-u", "app", "zsh", "-ec", "x"], True),
        (["bash", "script.sh"], False),
        (["echo", "sh", "--color"], False),
        (["python3", "-c", "x"], False),
    ],
)
def test_starting_a_shell_is_recognised_behind_wrappers(argv: list[str], shell: bool) -> None:
    assert starts_shell(argv) is shell
