"""Command patterns over argv: the matching rule shared by the agent's allowlist and the controller's policy.

A pattern is written like a command line (``"df *"``, ``"systemctl restart nginx"``) and split with ``shlex``
into tokens. It matches an argv token by token:

- a token without glob characters matches an equal argv token;
- ``*`` as the whole *last* token matches whatever remains, zero or more tokens (flags included);
- any other token with ``*``, ``?`` or ``[...]`` is a glob within one argv token (case-sensitive);
  such a glob never matches an argv token starting with ``-`` unless the pattern token itself starts with
  ``-``, so ``journalctl -u *`` allows ``journalctl -u nginx`` but a ``*.service`` slot never accepts
  ``--output=x.service``. A bare ``*`` elsewhere than at the end is such a glob: exactly one non-flag token.
- **``*``, ``?`` and ``[...]`` never match ``/``.** ``**`` does: in a token without ``/`` (``cat **``) it
  matches any characters, ``/`` included.
- **A path word** is a glob token containing ``/`` (``/var/log/*``, ``/var/log/**/*.gz``, or the value of an
  option, ``--file=/var/log/*``). It matches path segment by segment: ``*`` within one segment, ``**`` as a
  whole segment for any number of segments (one or more at the end: ``/var/log/**`` is everything *below*
  /var/log). The argument must be a plain path: no ``.`` or ``..`` segment, no empty segment (``//``, a
  trailing ``/``), no NUL, no percent-encoded ``.``/``/``/``\\``/NUL (``%2e``, ``%2f``, ``%5c``, ``%00``), and
  not through ``/proc/<any>/root``, ``/cwd``, ``/fd``, ``/map_files`` (also under ``task/<tid>/``, also when
  /proc is mounted elsewhere) or ``/dev/fd``. An argument inside the word's fixed directory that breaks one of
  these rules is *refused with the reason* (`Match.problem`) rather than silently not matched.
  A path word is lexical here; the agent also resolves symlinks on the host before running
  (``teleops.domain.arguments.resolved_refusal``).
- Deny rules match more, never less (`deny_matches`): their globs keep crossing ``/`` (``deny: ["cat /etc/*"]``
  still covers ``/etc/ssh/sshd_config``) and each path argument is also tried in its normalised form
  (``/var/log/../../etc/shadow`` is ``/etc/shadow`` for a deny rule) and, on the agent, resolved.

An empty argv never matches.
"""

from __future__ import annotations

import contextlib
import fnmatch
import posixpath
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "InvalidPattern",
    "Match",
    "argv_matches",
    "deny_matches",
    "is_glob",
    "is_path_word",
    "literal_prefix",
    "match_argv",
    "parse_pattern",
    "path_glob_matches",
    "path_problem",
    "pattern_text",
    "split_path_word",
]

REST = "*"
_GLOB_CHARS = frozenset("*?[")
# /proc/<pid>/<entry> (and /proc/<pid>/task/<tid>/<entry>) that are links into another process's view of the
# file system: reading through them reaches any file, whatever the directory the pattern names.
_PROC_LINKS = frozenset({"root", "cwd", "fd", "map_files"})
_PERCENT_ENCODED = re.compile(r"%(?:2e|2f|5c|00)", re.IGNORECASE)


class InvalidPattern(ValueError):
    """The pattern text cannot be split into tokens, or is empty, or has a path word that is not normalised."""


@dataclass(frozen=True, slots=True)
class Match:
    """How a pattern fits an argv. ``slots[i]`` is the pattern token that matched ``argv[i]`` (None: the
    trailing ``*``). ``problem`` is set when the argv fits except that a path argument is not a plain path
    (then the pattern does not allow it; the text says which argument and why)."""

    slots: tuple[str | None, ...]
    problem: str | None = None

    def wild(self, index: int) -> bool:
        """True when argv[index] was supplied through a wildcard (the trailing ``*`` or a glob token)."""
        slot = self.slots[index]
        return slot is None or is_glob(slot)


def is_glob(token: str) -> bool:
    return bool(_GLOB_CHARS.intersection(token))


def literal_prefix(token: str) -> str:
    """The part of a pattern token before its first glob character (all of it for a literal token)."""
    for index, char in enumerate(token):
        if char in _GLOB_CHARS:
            return token[:index]
    return token


def split_path_word(token: str) -> tuple[str, str]:
    """``(head, path)``: ``("--file=", "/var/log/*")`` for an option with a path value, else ``("", token)``."""
    if token.startswith("-") and "=" in token:
        head, _, value = token.partition("=")
        if "/" in value:
            return head + "=", value
    return "", token


def is_path_word(token: str) -> bool:
    """A glob pattern token that names paths: its path part contains ``/`` (see the module docstring)."""
    return is_glob(token) and "/" in split_path_word(token)[1]


def parse_pattern(text: str) -> tuple[str, ...]:
    """Split a pattern written like a command line into tokens.

    Raises InvalidPattern for an empty pattern, unbalanced quotes, or a path word that is not normalised or
    uses ``**`` inside a segment, with the reason in the message.
    """
    try:
        tokens = tuple(shlex.split(text))
    except ValueError as exc:  # shlex says "No closing quotation" / "No escaped character"
        raise InvalidPattern(f"cannot split pattern {text!r}: {exc}; check its quotes") from exc
    if not tokens:
        raise InvalidPattern(f"pattern {text!r} is empty; write the command it allows, e.g. 'uptime' or 'df *'")
    for token in tokens:
        if not is_path_word(token):
            continue
        path = split_path_word(token)[1]
        if any("**" in segment and segment != "**" for segment in path.split("/")):
            raise InvalidPattern(
                f"pattern {text!r}: in the path {path!r}, '**' must be a whole segment "
                "(e.g. /var/log/**/*.gz); '*' matches within one segment"
            )
        problem = path_problem(path)
        if problem is not None:
            raise InvalidPattern(f"pattern {text!r}: the path {path!r} is not a plain path: {problem}")
    return tokens


def pattern_text(tokens: Sequence[str]) -> str:
    """The canonical text of a parsed pattern (shell-quoted tokens joined by single spaces)."""
    return shlex.join(tokens)


def path_problem(path: str) -> str | None:
    """Why `path` is not a plain, normalised path (absolute or relative), or None when it is."""
    if "\x00" in path:
        return "it contains a NUL byte"
    if _PERCENT_ENCODED.search(path):
        return "it contains a percent-encoded '.', '/', '\\' or NUL (%2e, %2f, %5c, %00)"
    if path.startswith("//"):
        return "it starts with '//'"
    segments = path.split("/")
    body = segments[1:] if path.startswith("/") else segments
    for segment in body:
        if segment == "..":
            return "it has a '..' segment"
        if segment == ".":
            return "it has a '.' segment"
        if segment == "":
            return "it has an empty segment ('//' or a trailing '/')"
    link = _proc_link(body)
    if link is not None:
        return f"it goes through {link}, a /proc link into another view of the file system"
    if path.startswith("/") and body[:2] == ["dev", "fd"]:
        return "it goes through /dev/fd, a link to /proc/self/fd"
    return None


def _proc_link(segments: Sequence[str]) -> str | None:
    for index, segment in enumerate(segments):
        if segment != "proc":
            continue
        rest = segments[index + 1 :]
        if len(rest) >= 2 and rest[1] in _PROC_LINKS:
            return "/".join(["", "proc", *rest[:2]])
        if len(rest) >= 4 and rest[1] == "task" and rest[3] in _PROC_LINKS:
            return "/".join(["", "proc", *rest[:4]])
    return None


def path_glob_matches(pattern_path: str, path: str) -> bool:
    """Segment-wise glob: ``*``/``?``/``[...]`` within one segment, ``**`` (a whole segment) for zero or more
    segments, one or more when it is the last segment. Does not check `path_problem`."""
    patterns = pattern_path.split("/")
    segments = path.split("/")
    # reach[j]: the pattern segments so far match segments[:j] (linear in each, whatever the number of **).
    reach = [True] + [False] * len(segments)
    for index, pattern in enumerate(patterns):
        nxt = [False] * (len(segments) + 1)
        if pattern == "**":
            last = index == len(patterns) - 1
            seen = False
            for j in range(len(segments) + 1):
                if last:
                    nxt[j] = seen  # at least one segment
                    seen = seen or reach[j]
                else:
                    seen = seen or reach[j]
                    nxt[j] = seen
        else:
            for j in range(1, len(segments) + 1):
                nxt[j] = reach[j - 1] and fnmatch.fnmatchcase(segments[j - 1], pattern)
        reach = nxt
    return reach[-1]


def _fixed_directory(pattern_path: str) -> str:
    """``/var/log/`` for ``/var/log/*.log``: the literal segments before the first glob segment, with a slash."""
    literal: list[str] = []
    for segment in pattern_path.split("/")[:-1]:
        if is_glob(segment):
            break
        literal.append(segment)
    return "/".join(literal) + "/" if literal else ""


def _token_verdict(pattern_token: str, arg: str) -> bool | str:
    """True when arg fits the pattern token, False when not, a reason when it is in the token's directory but
    not a plain path."""
    if not is_glob(pattern_token):
        return pattern_token == arg
    # A glob slot must not let a flag in: an attacker-chosen "--exec=..." would otherwise fit "*".
    if arg.startswith("-") and not pattern_token.startswith("-"):
        return False
    if not is_path_word(pattern_token):
        # One argument, one name: a glob never crosses '/' unless the pattern says ** (any characters).
        if "/" in arg and "**" not in pattern_token:
            return False
        return fnmatch.fnmatchcase(arg, pattern_token)
    head, pattern_path = split_path_word(pattern_token)
    value = arg
    if head:
        arg_head, equals, value = arg.partition("=")
        if not equals or not fnmatch.fnmatchcase(arg_head + "=", head):
            return False
    if not is_glob(pattern_path):
        return value == pattern_path
    if not value.startswith(_fixed_directory(pattern_path)):
        return False
    problem = path_problem(value)
    if problem is not None:
        return f"{value!r} is not a plain path under {pattern_path}: {problem}"
    return path_glob_matches(pattern_path, value)


def match_argv(pattern: Sequence[str], argv: Sequence[str]) -> Match | None:
    """How argv fits the parsed pattern, or None when it does not (see the module docstring for the rules)."""
    if not argv or not pattern:
        return None
    if pattern[-1] == REST:
        fixed = tuple(pattern[:-1])
        if len(argv) < len(fixed):
            return None
    else:
        fixed = tuple(pattern)
        if len(argv) != len(fixed):
            return None
    problem: str | None = None
    for index, (token, arg) in enumerate(zip(fixed, argv, strict=False)):
        verdict = _token_verdict(token, arg)
        if verdict is False:
            return None
        if isinstance(verdict, str) and problem is None:
            problem = f"argument {index} {verdict}"
    slots: tuple[str | None, ...] = (*fixed, *([None] * (len(argv) - len(fixed))))
    return Match(slots, problem)


def argv_matches(pattern: Sequence[str], argv: Sequence[str]) -> bool:
    """True when argv is allowed by the parsed pattern as far as its words go: it fits, and every path argument
    is a plain path inside its path word. (Executing flags are `teleops.domain.arguments`' business.)"""
    found = match_argv(pattern, argv)
    return found is not None and found.problem is None


def _strip_proc_root(path: str) -> str:
    # /proc/<pid>/root/etc/shadow is /etc/shadow for a process in the host's root: a deny rule sees that too.
    while True:
        parts = path.split("/", 4)
        if len(parts) >= 4 and parts[0] == "" and parts[1] == "proc" and parts[3] == "root":
            path = "/" + (parts[4] if len(parts) == 5 else "")
            continue
        return path


def _deny_forms(arg: str, resolve: Callable[[str], str] | None) -> set[str]:
    forms = {arg}
    head, path = split_path_word(arg) if arg.startswith("-") else ("", arg)
    if "/" not in path or "\x00" in path:
        return forms
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    for candidate in (normal, _strip_proc_root(normal)):
        forms.add(head + candidate)
        if resolve is not None:
            with contextlib.suppress(OSError, ValueError):
                forms.add(head + resolve(candidate))
    return forms


def deny_matches(pattern: Sequence[str], argv: Sequence[str], *, resolve: Callable[[str], str] | None = None) -> bool:
    """True when a *deny* pattern covers argv. Matches at least what it always did (globs cross ``/``) and also
    each path argument's normalised form, its form without a leading ``/proc/<pid>/root`` and, given `resolve`
    (the agent passes its realpath), its resolved form: a deny rule is not bypassed by spelling a path another
    way."""
    if not argv or not pattern:
        return False
    if pattern[-1] == REST:
        fixed = tuple(pattern[:-1])
        if len(argv) < len(fixed):
            return False
    elif len(argv) != len(pattern):
        return False
    else:
        fixed = tuple(pattern)
    for token, arg in zip(fixed, argv, strict=False):
        forms = _deny_forms(arg, resolve)
        if not is_glob(token):
            if token not in forms:
                return False
            continue
        if arg.startswith("-") and not token.startswith("-"):
            return False
        if not any(fnmatch.fnmatchcase(form, token) for form in forms):
            return False
    return True
