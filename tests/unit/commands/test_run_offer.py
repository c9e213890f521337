"""Whether the incident page offers "Run a command on HOST": an allow rule of the person's role covers the host."""

from __future__ import annotations

import pytest

from teleops.commands.run_offer import offers_commands_on
from teleops.domain.policy import compile_policy

POLICY = compile_policy(
    {
        "web": [{"hosts": ["web-*"], "commands": ["uptime"]}],
        "fenced": [{"hosts": ["db-*"], "commands": ["*"], "effect": "deny"}],
        "admin": [{"hosts": ["*"], "commands": ["*"]}],
    },
    parse_duration=float,
)


@pytest.mark.parametrize(
    ("role", "host", "offered"),
    [
        ("web", "web-1", True),
        ("web", "WEB-2", True),  # host patterns match case-insensitively, as authorize does
        ("web", "db-1", False),
        ("fenced", "db-1", False),  # a deny rule alone offers nothing
        ("admin", "anything", True),
        ("nobody-knows-this-role", "web-1", False),
        (None, "web-1", False),  # not (or no longer) a user
        ("admin", "", False),  # the incident names no host
    ],
)
def test_the_form_is_offered_only_where_an_allow_rule_covers_the_host(
    role: str | None, host: str, offered: bool
) -> None:
    assert offers_commands_on(role, host, policy=POLICY) is offered
