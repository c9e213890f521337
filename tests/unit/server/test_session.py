"""Session cookies and CSRF tokens (server/session.py); the login throttle is tests/integration/test_signin_guard.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from teleops.server.session import SessionSigner

NOW = datetime(2026, 11, 25, 3, 12, tzinfo=UTC)
KEY = b"k" * 32


def test_issued_cookie_verifies_as_its_user() -> None:
    signer = SessionSigner(KEY)
    session = signer.verify(signer.issue("alice", now=NOW), now=NOW + timedelta(minutes=5))
    assert session is not None
    assert session.user == "alice"
    assert session.issued_at == NOW


def test_every_login_gets_a_new_session_id() -> None:
    signer = SessionSigner(KEY)
    first = signer.verify(signer.issue("alice", now=NOW), now=NOW)
    second = signer.verify(signer.issue("alice", now=NOW), now=NOW)
    assert first is not None
    assert second is not None
    assert first.sid != second.sid


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c.replace("v1.", "v2.", 1),
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # signature changed
        lambda c: c.split(".")[0] + "." + c.split(".")[1] + ".",  # signature removed
        lambda c: "v1." + c.split(".")[1],  # no signature part at all
        lambda c: "",
        lambda c: "garbage",
    ],
)
def test_tampered_cookie_is_refused(mangle: Callable[[str], str]) -> None:
    signer = SessionSigner(KEY)
    cookie = signer.issue("alice", now=NOW)
    assert signer.verify(mangle(cookie), now=NOW) is None


def test_payload_swapped_to_another_user_is_refused() -> None:
    signer = SessionSigner(KEY)
    alice = signer.issue("alice", now=NOW)
    admin = signer.issue("admin", now=NOW)
    forged = "v1." + admin.split(".")[1] + "." + alice.split(".")[2]
    assert signer.verify(forged, now=NOW) is None


def test_cookie_signed_with_another_key_is_refused() -> None:
    cookie = SessionSigner(b"x" * 32).issue("admin", now=NOW)
    assert SessionSigner(KEY).verify(cookie, now=NOW) is None


def test_session_expires_after_its_ttl() -> None:
    signer = SessionSigner(KEY, ttl=timedelta(hours=12))
    cookie = signer.issue("alice", now=NOW)
    assert signer.verify(cookie, now=NOW + timedelta(hours=11, minutes=59)) is not None
    assert signer.verify(cookie, now=NOW + timedelta(hours=12, seconds=1)) is None


def test_cookie_from_the_future_is_refused() -> None:
    signer = SessionSigner(KEY)
    assert signer.verify(signer.issue("alice", now=NOW + timedelta(hours=1)), now=NOW) is None


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SessionSigner(b"short")


def test_csrf_token_belongs_to_one_session() -> None:
    signer = SessionSigner(KEY)
    mine = signer.verify(signer.issue("alice", now=NOW), now=NOW)
    other = signer.verify(signer.issue("alice", now=NOW), now=NOW)
    assert mine is not None
    assert other is not None
    assert signer.check_csrf(mine, signer.csrf_token(mine))
    assert not signer.check_csrf(mine, signer.csrf_token(other))
    assert not signer.check_csrf(mine, "")
    assert not signer.check_csrf(mine, None)


def test_login_csrf_token_is_bound_to_its_nonce() -> None:
    signer = SessionSigner(KEY)
    token = signer.login_csrf_token("nonce-1")
    assert signer.check_login_csrf("nonce-1", token)
    assert not signer.check_login_csrf("nonce-2", token)
    assert not signer.check_login_csrf(None, token)
    assert not signer.check_login_csrf("nonce-1", None)
