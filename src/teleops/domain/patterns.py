"""Command patterns over argv: the matching rule shared by the agent's allowlist and the controller's policy.

A pattern is written like a command line (``"df *"``, ``"systemctl restart nginx"``) and split with ``shlex``
into tokens. It matches an argv token by token:

- a token without glob characters matches an equal argv token;
- ``*`` as the whole *last* token matches whatever remains, zero or more tokens (flags included);
- any other token with ``*``, ``?`` or ``[...]`` is a glob within one argv token (``fnmatch``, case-sensitive);
  such a glob never matches an argv token starting with ``-`` unless the pattern token itself starts with
  ``-``, so ``journalctl -u *`` allows ``journalctl -u nginx`` but a ``*.service`` slot never accepts
  ``--output=x.service``. A bare ``*`` elsewhere than at the end is such a glob: exactly one non-flag token.

An empty argv never matches.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Sequence

__all__ = ["InvalidPattern", "argv_matches", "parse_pattern", "pattern_text"]

REST = "*"
_GLOB_CHARS = frozenset("*?[")


class InvalidPattern(ValueError):
    """The pattern text cannot be split into tokens, or is empty."""


def parse_pattern(text: str) -> tuple[str, ...]:
    """Split a pattern written like a command line into tokens.

    Raises InvalidPattern for an empty pattern or unbalanced quotes, with the reason in the message.
    """
    try:
        tokens = tuple(shlex.split(text))
    except ValueError as exc:  # shlex says "No closing quotation" / "No escaped character"
        raise InvalidPattern(f"cannot split pattern {text!r}: {exc}; check its quotes") from exc
    if not tokens:
        raise InvalidPattern(f"pattern {text!r} is empty; write the command it allows, e.g. 'uptime' or 'df *'")
    return tokens


def pattern_text(tokens: Sequence[str]) -> str:
    """The canonical text of a parsed pattern (shell-quoted tokens joined by single spaces)."""
    return shlex.join(tokens)


def _token_matches(pattern_token: str, arg: str) -> bool:
    if not _GLOB_CHARS.intersection(pattern_token):
        return pattern_token == arg
    # A glob slot must not let a flag in: an attacker-chosen "--exec=..." would otherwise fit "*".
    if arg.startswith("-") and not pattern_token.startswith("-"):
        return False
    return fnmatch.fnmatchcase(arg, pattern_token)


def argv_matches(pattern: Sequence[str], argv: Sequence[str]) -> bool:
    """True when argv is allowed by the parsed pattern (see the module docstring for the rules)."""
    if not argv or not pattern:
        return False
    if pattern[-1] == REST:
        fixed = pattern[:-1]
        if len(argv) < len(fixed):
            return False
        return all(_token_matches(p, a) for p, a in zip(fixed, argv, strict=False))
    if len(argv) != len(pattern):
        return False
    return all(_token_matches(p, a) for p, a in zip(pattern, argv, strict=True))
