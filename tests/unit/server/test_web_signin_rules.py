"""The sign-in ticket and the password lockout (server/web_signin.py): pure, with explicit times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.domain.policy import compile_policy
from teleops.server.web_signin import SignInLockout, SignInTickets, role_needs_code

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


def test_the_limit_th_failure_in_a_row_locks_for_the_duration_and_a_success_resets_the_row() -> None:
    lockout = SignInLockout(limit=3, duration=timedelta(minutes=15))
    assert lockout.failed("Olga", now=NOW) is None
    lockout.succeeded("olga")  # the row is broken: counting starts again
    assert lockout.failed("olga", now=NOW) is None
    assert lockout.failed("olga", now=NOW) is None
    until = lockout.failed("OLGA", now=NOW)
    assert until == NOW + timedelta(minutes=15)
    assert lockout.locked_until("olga", now=NOW + timedelta(minutes=14)) == until
    assert lockout.locked_until("olga", now=until) is None
    assert lockout.locked_until("ada", now=NOW) is None


def test_roles_whose_rules_ask_for_a_code_must_enrol() -> None:
    default = compile_policy(None, parse_duration=float)
    assert role_needs_code(default, "admin")  # `*`, step-up before a change by default
    assert not role_needs_code(default, "operator")  # read-only diagnostics
    assert not role_needs_code(default, "nobody")
    chosen = compile_policy(
        {"admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}]}, parse_duration=float
    )
    assert not role_needs_code(chosen, "admin")
