"""Which commands only look at a host: the table behind the step-up default. Pure; stdlib only.

A policy rule that leaves ``require_2fa`` out asks for a second factor before any command that can change a
host (teleops.domain.policy). "Cannot change the host" is decided here, from one explicit table,
`READ_ONLY_COMMANDS`, and nothing else: a program that is not in it counts as one that can change the host.

Each entry names a program (and maybe a subcommand: ``systemctl status``) and which arguments keep it
read-only:

- `Arguments.ANY`: any arguments, wildcards included. The program has no option that writes, deletes, kills or
  reconfigures (``df``, ``ps``, ``cat``, ``tail``, ``systemctl status``).
- `Arguments.NONE`: only with no argument at all. With arguments it can change the host (``date -s``,
  ``hostname NAME``, ``dmesg --clear``, ``mount DEV DIR``, ``ss --kill``).
- `Arguments.NAMED`: arguments spelled out, none of which is one of the program's writing options
  (`ReadOnlyCommand.writes`, e.g. ``journalctl --vacuum-size``, ``--rotate``, ``--cursor-file``). An option
  counts as writing when its name (before ``=``) is the whole or a prefix of a writing option's name, because
  GNU-style parsers accept unambiguous abbreviations (``--vac=1G``). In a rule pattern, a wildcard may stand
  only for words that cannot be options: a glob token not starting with ``-`` (teleops.domain.patterns never
  lets one match an argument starting with ``-``), never the trailing ``*``, which takes any flags.

The program is matched as a bare name (``df``, not ``/usr/bin/df``: a path may name any file). A ``shell:
true`` rule is never read-only (a shell runs anything). Read-only is about the host's state: ``cat`` still
reads whatever the agent's user may read, and reading a device file can have effects of its own — keep such
paths out with deny rules and the agent's allowlist.

Two questions are answered: `argv_is_read_only` for one command about to run, and `pattern_is_read_only` for
a rule's command pattern (true only when every argv the pattern can match is read-only; property-tested
against the first).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from teleops.domain.patterns import REST, is_glob

__all__ = [
    "READ_ONLY_COMMANDS",
    "Arguments",
    "ReadOnlyCommand",
    "argv_is_read_only",
    "pattern_is_read_only",
]


class Arguments(enum.Enum):
    ANY = "any"
    NONE = "none"
    NAMED = "named"


@dataclass(frozen=True, slots=True)
class ReadOnlyCommand:
    words: tuple[str, ...]  # the program, then subcommand words: ("systemctl", "status")
    arguments: Arguments
    writes: frozenset[str] = frozenset()  # long options that change the host (Arguments.NAMED), with "--"

    def text(self) -> str:
        """As the docs write it: ``df *``, ``date``, ``journalctl ARGS…``."""
        tail = {Arguments.ANY: " *", Arguments.NONE: "", Arguments.NAMED: " ARGS…"}[self.arguments]
        return " ".join(self.words) + tail


def _any(*words: str) -> ReadOnlyCommand:
    return ReadOnlyCommand(tuple(words), Arguments.ANY)


def _bare(*words: str) -> ReadOnlyCommand:
    return ReadOnlyCommand(tuple(words), Arguments.NONE)


# journalctl's options that write: vacuum/rotate/flush/sync the journal files, move it off /var, write FSS keys
# or the catalog, and --cursor-file, which writes the last cursor to a file the argument names.
_JOURNALCTL_WRITES = frozenset(
    {
        "--vacuum-size",
        "--vacuum-time",
        "--vacuum-files",
        "--rotate",
        "--flush",
        "--sync",
        "--relinquish-var",
        "--smart-relinquish-var",
        "--setup-keys",
        "--update-catalog",
        "--cursor-file",
    }
)

READ_ONLY_COMMANDS: tuple[ReadOnlyCommand, ...] = (
    # System state.
    _any("uptime"),
    _any("uname"),
    _any("free"),
    _any("vmstat"),
    _any("nproc"),
    _any("lscpu"),
    _any("lsblk"),
    _any("df"),
    _any("du"),
    _any("w"),
    _any("who"),
    _any("id"),
    _any("whoami"),
    _any("groups"),
    _any("ps"),
    _any("pgrep"),
    _any("echo"),
    _any("printf"),  # /usr/bin/printf: no shell runs it, so it only prints
    _any("sleep"),
    _any("true"),
    _any("false"),
    # Files, read only.
    _any("ls"),
    _any("stat"),
    _any("cat"),
    _any("head"),
    _any("tail"),
    _any("wc"),
    _any("grep"),
    # Services: the inspecting verbs of systemctl (its verb is the first word after the program).
    _any("systemctl", "status"),
    _any("systemctl", "show"),
    _any("systemctl", "cat"),
    _any("systemctl", "is-active"),
    _any("systemctl", "is-enabled"),
    _any("systemctl", "is-failed"),
    _any("systemctl", "list-units"),
    _any("systemctl", "list-unit-files"),
    _any("systemctl", "list-timers"),
    ReadOnlyCommand(("journalctl",), Arguments.NAMED, _JOURNALCTL_WRITES),
    # Read-only only without arguments: with them they set the clock, the host name, clear the kernel ring
    # buffer, mount file systems, kill sockets.
    _bare("date"),
    _bare("hostname"),
    _bare("dmesg"),
    _bare("mount"),
    _bare("ss"),
)


def _entry(words: Sequence[str]) -> ReadOnlyCommand | None:
    """The table entry whose words start `words` (the longest one), or None. Words must be literal."""
    best: ReadOnlyCommand | None = None
    for entry in READ_ONLY_COMMANDS:
        size = len(entry.words)
        if tuple(words[:size]) == entry.words and (best is None or size > len(best.words)):
            best = entry
    return best


def _writing_option(token: str, writes: frozenset[str]) -> bool:
    if not token.startswith("--") or token == "--":  # noqa: S105 (an argv word, not a password)
        return False
    name = token.split("=", 1)[0]
    return any(option.startswith(name) for option in writes)


def argv_is_read_only(argv: Sequence[str]) -> bool:
    """True when this command, run as given (no shell), cannot change the host by `READ_ONLY_COMMANDS`."""
    if not argv or "/" in argv[0]:
        return False
    entry = _entry(argv)
    if entry is None:
        return False
    rest = argv[len(entry.words) :]
    if entry.arguments is Arguments.ANY:
        return True
    if entry.arguments is Arguments.NONE:
        return not rest
    return not any(_writing_option(token, entry.writes) for token in rest)


def pattern_is_read_only(pattern: Sequence[str]) -> bool:
    """True when every argv the parsed command pattern (teleops.domain.patterns.parse_pattern) can match is
    read-only (`argv_is_read_only`). Globs in the program or subcommand words, a path as the program, and the
    trailing ``*`` after a program that is read-only only with some arguments make it False."""
    if not pattern or "/" in pattern[0]:
        return False
    # Only the literal words from the start can select a table entry; a glob there could name any program.
    literal = []
    for token in pattern:
        if is_glob(token):
            break
        literal.append(token)
    entry = _entry(literal)
    if entry is None:
        return False
    rest = pattern[len(entry.words) :]
    if entry.arguments is Arguments.ANY:
        return True
    if entry.arguments is Arguments.NONE:
        return not rest
    if rest and rest[-1] == REST:
        return False
    # An option must be spelled out (a glob could supply any flag) and must not be a writing one.
    return not any(t.startswith("-") and (is_glob(t) or _writing_option(t, entry.writes)) for t in rest)
