"""Redaction of built-in secret shapes, configured patterns and known values (pure)."""

from __future__ import annotations

import pytest

from teleops.domain.redaction import MASK, Redactor, SecretRules, redact

RULES = SecretRules.build(patterns=[r"corp-(?P<secret>[0-9a-f]{12})"], known_secrets=["Sup3r-Secret-Value"])

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\nAAAA\n-----END OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"key:\n{PEM}\ndone", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU="),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA", "MIIEpAIBAAKCAQEA"),  # cut off: masked to the end
        ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("DB_PASSWORD=hunter2hunter2", "hunter2hunter2"),
        ("passwd: 'correct horse'", "correct horse"),
        ("client_secret=abc123def456", "abc123def456"),
        ("dsn=postgres://app:pa55word@db:5432/app", "pa55word"),
        ("SLACK=xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
        ("token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 end", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"),
        ("gh: ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
        ("id corp-0123456789ab", "0123456789ab"),
        ("leaked Sup3r-Secret-Value!", "Sup3r-Secret-Value"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    out = redact(text, RULES)
    assert secret not in out
    assert MASK in out


def test_ordinary_output_is_left_alone() -> None:
    text = " 09:00:01 up 3 days,  2 users,  load average: 0.00, 0.01, 0.05\nFilesystem  Size Used\n/dev/sda1 20G 3G"
    assert redact(text, RULES) == text


def test_the_key_of_a_key_value_pair_stays_readable() -> None:
    assert redact("password=hunter2hunter2 next", RULES) == f"password={MASK} next"


def test_a_pattern_matching_the_empty_string_is_refused() -> None:
    with pytest.raises(ValueError, match="empty string"):
        SecretRules.build(patterns=["x*"])


def test_stream_output_equals_whole_output_for_ordinary_text() -> None:
    text = "line one\nline two password=abcdefgh\n" * 50
    redactor = Redactor(RULES)
    pieces = [redactor.feed(text[i : i + 7]) for i in range(0, len(text), 7)]
    assert "".join(pieces) + redactor.flush() == redact(text, RULES)
