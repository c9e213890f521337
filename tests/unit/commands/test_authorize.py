"""The authorize step with the built-in default policy: admin anything, operator read-only, everyone else nothing."""

from __future__ import annotations

import pytest

from teleops.commands.authorize import authorize


@pytest.mark.parametrize("argv", [["reboot"], ["rm", "-rf", "/"], ["uptime"]])
def test_admin_may_run_anything(argv: list[str]) -> None:
    assert authorize("root-person", "admin", "web-1", argv).allowed


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["uptime"], True),
        (["df", "-h"], True),
        (["systemctl", "status", "nginx"], True),
        (["systemctl", "restart", "nginx"], False),
        (["systemctl"], False),
        (["uptimex"], False),
        (["reboot"], False),
        (["sh", "-c", "uptime"], False),
    ],
)
def test_operator_gets_read_only_commands_only(argv: list[str], allowed: bool) -> None:
    assert authorize("alice", "operator", "web-1", argv).allowed is allowed


def test_unknown_roles_are_denied_with_a_reason_that_says_what_to_do() -> None:
    decision = authorize("eve", "viewer", "web-1", ["uptime"])
    assert not decision.allowed
    assert decision.rule == "default deny"
    assert decision.reason == (
        'role "viewer" of eve is not defined in the policy, so nothing is allowed; ask an admin to add it under '
        "policy.roles"
    )


def test_an_empty_argv_is_never_allowed() -> None:
    assert not authorize("root-person", "admin", "web-1", []).allowed
