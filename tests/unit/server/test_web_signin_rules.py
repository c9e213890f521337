"""The sign-in ticket and who must enrol (server/web_signin.py): pure, with explicit times. The password lockout
is counted in the database: tests/integration/test_signin_guard.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.domain.policy import compile_policy
from teleops.server.web_signin import SignInTickets, role_needs_code

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
KEY = b"k" * 32


def test_a_ticket_names_its_user_only_with_its_own_nonce_and_within_five_minutes() -> None:
    tickets = SignInTickets(KEY)
    ticket = tickets.issue("ada", "nonce-1", now=NOW)
    assert tickets.check(ticket, "nonce-1", now=NOW + timedelta(minutes=4)) == "ada"
    assert tickets.check(ticket, "nonce-2", now=NOW) is None  # another browser's login form
    assert tickets.check(ticket, None, now=NOW) is None
    assert tickets.check(ticket, "nonce-1", now=NOW + timedelta(minutes=5, seconds=1)) is None
    assert SignInTickets(b"x" * 32).check(ticket, "nonce-1", now=NOW) is None  # another key
    payload, _, signature = ticket.partition(".")
    assert tickets.check(f"{payload}x.{signature}", "nonce-1", now=NOW) is None
    assert tickets.check("garbage", "nonce-1", now=NOW) is None


def test_roles_whose_rules_ask_for_a_code_must_enrol() -> None:
    default = compile_policy(None, parse_duration=float)
    assert role_needs_code(default, "admin")  # `*`, step-up before a change by default
    assert not role_needs_code(default, "operator")  # read-only diagnostics
    assert not role_needs_code(default, "nobody")
    chosen = compile_policy(
        {"admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}]}, parse_duration=float
    )
    assert not role_needs_code(chosen, "admin")
