"""A typed command line → argv, with shell quoting rules but no shell (docs/threat-model.md T10)."""

from __future__ import annotations

import shlex
import unicodedata

__all__ = ["CommandLineError", "split_command"]

MAX_COMMAND_CHARS = 4096


class CommandLineError(ValueError):
    """The text cannot become an argv; the message says how to fix it."""


def split_command(text: str) -> list[str]:
    """Split like a POSIX shell would, without running one. Raises CommandLineError for an empty command,
    unbalanced quotes, a NUL byte or an over-long line."""
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandLineError(f"the command is {len(text)} characters; the limit is {MAX_COMMAND_CHARS}")
    if "\x00" in text:
        raise CommandLineError("the command contains a NUL byte; remove it")
    _refuse_invisible(text)
    try:
        argv = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        detail = "unbalanced quote" if "quotation" in str(exc) else str(exc)
        raise CommandLineError(f"cannot parse the command: {detail}; close the quote or escape it with \\") from None
    if not argv:
        raise CommandLineError("the command is empty; write what to run, e.g. `uptime`")
    return argv


_ALLOWED_CONTROLS = frozenset("\t\n\r")


def _refuse_invisible(text: str) -> None:
    """Bidi controls, zero-width characters and other invisible formatting (Unicode category Cf), and control
    characters but tab and newline, make a command look like another when shown in chat or in an approval
    request (docs/threat-model.md T25): refused, naming the first one."""
    for position, char in enumerate(text, start=1):
        category = unicodedata.category(char)
        if category == "Cf" or (category == "Cc" and char not in _ALLOWED_CONTROLS):
            name = unicodedata.name(char, "a control character")
            raise CommandLineError(
                f"the command contains U+{ord(char):04X} ({name}) at character {position}, an invisible character "
                "that can make a command look like another; retype it without it"
            )
