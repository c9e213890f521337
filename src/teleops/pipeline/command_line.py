"""A typed command line → argv, with shell quoting rules but no shell (THREATS T10)."""

from __future__ import annotations

import shlex

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
    try:
        argv = shlex.split(text, comments=False, posix=True)
    except ValueError as exc:
        detail = "unbalanced quote" if "quotation" in str(exc) else str(exc)
        raise CommandLineError(f"cannot parse the command: {detail}; close the quote or escape it with \\") from None
    if not argv:
        raise CommandLineError("the command is empty; write what to run, e.g. `uptime`")
    return argv
