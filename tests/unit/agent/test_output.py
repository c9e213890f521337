"""Capped head + tail output and the display-safe decoding of command output."""

from __future__ import annotations

import pytest

from teleops.agent.output import CappedOutput, printable, truncation_marker


def test_small_output_is_kept_whole_and_streamed_whole() -> None:
    out = CappedOutput(100)
    streamed = out.feed(b"hello ") + out.feed(b"world\n")
    assert streamed == b"hello world\n"
    assert out.value() == b"hello world\n"
    assert out.total == 12
    assert not out.truncated


def test_output_exactly_at_cap_is_not_truncated() -> None:
    out = CappedOutput(10)
    out.feed(b"0123456789")
    assert out.value() == b"0123456789"
    assert not out.truncated


def test_head_and_tail_kept_with_marker_and_count() -> None:
    out = CappedOutput(10)
    streamed = out.feed(b"abcdefghijklmnopqrstuvwxyz")
    assert streamed == b"abcde"  # streaming stops at the head (half the cap)
    assert out.truncated
    assert out.dropped == 16
    assert out.total == 26
    assert out.value() == b"abcde\n" + truncation_marker(16) + b"vwxyz"
    assert truncation_marker(16) == "[… 16 bytes truncated …]\n".encode()


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1000])
def test_chunking_does_not_change_the_result(chunk_size: int) -> None:
    data = bytes(range(256)) * 20
    out = CappedOutput(100)
    streamed = b""
    for i in range(0, len(data), chunk_size):
        streamed += out.feed(data[i : i + chunk_size])
    assert streamed == data[:50]
    assert out.value() == data[:50] + b"\n" + truncation_marker(len(data) - 100) + data[-50:]
    assert out.total == len(data)


def test_marker_goes_on_its_own_line_after_a_newline() -> None:
    out = CappedOutput(4)
    out.feed(b"a\n" + b"x" * 10 + b"yz")
    assert out.value() == b"a\n" + truncation_marker(10) + b"yz"


def test_memory_is_bounded_however_much_is_fed() -> None:
    out = CappedOutput(1024)
    for _ in range(10_000):
        out.feed(b"y\n" * 512)
    assert out.total == 10_000 * 1024
    assert len(out.value()) <= 1024 + len(truncation_marker(out.dropped)) + 1


def test_cap_must_hold_something() -> None:
    with pytest.raises(ValueError, match="at least 2 bytes"):
        CappedOutput(1)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain text", "plain text"),
        (b"two\nlines\tand tab\n", "two\nlines\tand tab\n"),
        (b"\x1b[2Jcleared", "\\x1b[2Jcleared"),
        (b"\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        (b"carriage\rreturn", "carriage\\x0dreturn"),
        (b"nul\x00byte", "nul\\x00byte"),
        (b"del\x7f", "del\\x7f"),
        ("c1\u0085\u009b".encode(), "c1\\x85\\x9b"),
        ("rm \u202ecod.exe".encode(), "rm \\u202ecod.exe"),
        ("zero\u200bwidth\ufeff".encode(), "zero\\u200bwidth\\ufeff"),
        ("isolate\u2066x\u2069".encode(), "isolate\\u2066x\\u2069"),
        ("line\u2028sep".encode(), "line\\u2028sep"),
        ("private\U000f0000".encode(), "private\\U000f0000"),
        (b"bad \xff\xfe utf8", "bad \ufffd\ufffd utf8"),
        ("кириллица и emoji 🙂".encode(), "кириллица и emoji 🙂"),
    ],
)
def test_printable(raw: bytes, shown: str) -> None:
    assert printable(raw) == shown
