"""Argv pattern semantics, as a decision table: the rules the agent allowlist and the controller policy share."""

from __future__ import annotations

import pytest

from teleops.domain.patterns import InvalidPattern, argv_matches, parse_pattern, pattern_text

# (pattern text, argv, matches?, why)
TABLE: list[tuple[str, list[str], bool, str]] = [
    # literal tokens
    ("uptime", ["uptime"], True, "exact single token"),
    ("uptime", ["uptime", "-p"], False, "extra token without trailing *"),
    ("uptime", ["/usr/bin/uptime"], False, "a literal program name does not match a path"),
    ("uptime", ["Uptime"], False, "case-sensitive"),
    ("systemctl restart nginx", ["systemctl", "restart", "nginx"], True, "all literals equal"),
    ("systemctl restart nginx", ["systemctl", "restart"], False, "argv shorter than pattern"),
    ("systemctl restart nginx", ["systemctl", "restart", "nginx", "x"], False, "argv longer than pattern"),
    ("systemctl restart nginx", ["systemctl", "restart", "nginx2"], False, "literal is not a prefix match"),
    ("df -h", ["df", "-h"], True, "literal flag equal"),
    ("df -h", ["df", "-H"], False, "literal flag differs"),
    # trailing * = rest (zero or more tokens, flags included)
    ("df *", ["df"], True, "trailing * matches zero tokens"),
    ("df *", ["df", "-h"], True, "trailing * takes flags"),
    ("df *", ["df", "-h", "/var", "--total"], True, "trailing * takes many tokens"),
    ("df *", ["du", "-h"], False, "program differs"),
    ("*", ["anything", "--at", "all"], True, "a lone * allows every non-empty argv"),
    ("journalctl -u nginx *", ["journalctl", "-u", "nginx", "-n", "50"], True, "fixed prefix then rest"),
    ("journalctl -u nginx *", ["journalctl", "-u", "apache"], False, "fixed prefix differs"),
    # * inside a token = glob within one token, never a flag unless the pattern token is a flag
    ("systemctl restart nginx@*", ["systemctl", "restart", "nginx@a"], True, "glob within a token"),
    ("systemctl restart nginx@*", ["systemctl", "restart", "nginx@a", "b"], False, "a token glob is one token"),
    ("cat /var/log/*.log", ["cat", "/var/log/syslog.log"], True, "glob on a path"),
    ("cat /var/log/*.log", ["cat", "/var/log/a/b.log"], False, "* stays within one path segment (** crosses)"),
    ("cat /var/log/**/*.log", ["cat", "/var/log/a/b.log"], True, "** as a whole segment crosses /"),
    ("cat /var/log/*.log", ["cat", "/var/log/syslog"], False, "glob suffix must match"),
    ("journalctl -u *.service", ["journalctl", "-u", "nginx.service"], True, "glob slot after a literal flag"),
    ("journalctl -u *.service", ["journalctl", "-u", "--output=x.service"], False, "glob never matches a flag"),
    ("journalctl -u *.service", ["journalctl", "-u", "-x.service"], False, "glob never matches a short flag"),
    ("tail -n *", ["tail", "-n", "50"], True, "trailing * after a flag"),
    ("ls --color=*", ["ls", "--color=never"], True, "a flag glob may match a flag"),
    ("ls -*", ["ls", "-la"], True, "'-*' is a token glob (not rest) and may match a flag"),
    ("ls -*", ["ls", "-l", "-a"], False, "'-*' is one token, not the rest"),
    ("ls -* /tmp", ["ls", "-la", "/tmp"], True, "pattern token starting with - may match a flag"),
    ("ls -* /tmp", ["ls", "/etc", "/tmp"], False, "'-*' needs a leading dash"),
    ("echo ?", ["echo", "a"], True, "? matches one character"),
    ("echo ?", ["echo", "ab"], False, "? is exactly one character"),
    ("echo [ab]", ["echo", "b"], True, "character class"),
    ("echo [ab]", ["echo", "c"], False, "character class excludes"),
    # a bare * not at the end is a one-token glob, not a rest
    ("systemctl * nginx", ["systemctl", "restart", "nginx"], True, "middle * is exactly one token"),
    ("systemctl * nginx", ["systemctl", "nginx"], False, "middle * is not zero tokens"),
    ("systemctl * nginx", ["systemctl", "a", "b", "nginx"], False, "middle * is not several tokens"),
    ("systemctl * nginx", ["systemctl", "--now", "nginx"], False, "middle * never takes a flag"),
    ("* status", ["systemctl", "status"], True, "leading * is one token"),
    # quoting in patterns
    ("echo 'hello world'", ["echo", "hello world"], True, "quoted pattern token with a space"),
    ("echo 'hello world'", ["echo", "hello", "world"], False, "quoted token is one token"),
    ("echo '*'", ["echo", "a", "b"], True, "quoting does not make * literal: it is still the rest"),
    ("echo [*]", ["echo", "*"], True, "[*] is how to match a literal *"),
    ("echo [*]", ["echo", "x"], False, "[*] matches only a literal *"),
    # empty argv
    ("*", [], False, "empty argv never matches, even *"),
    ("uptime", [], False, "empty argv never matches"),
    ("uptime", [""], False, "an empty token is not the program"),
]


@pytest.mark.parametrize(("pattern", "argv", "expected", "why"), TABLE, ids=[f"{r[0]!r}~{r[1]!r}" for r in TABLE])
def test_pattern_table(pattern: str, argv: list[str], expected: bool, why: str) -> None:
    assert argv_matches(parse_pattern(pattern), argv) is expected, why


def test_table_is_big_enough_and_balanced() -> None:
    assert len(TABLE) >= 30
    assert sum(1 for row in TABLE if row[2]) >= 12
    assert sum(1 for row in TABLE if not row[2]) >= 12


@pytest.mark.parametrize("text", ["", "   ", "echo 'unbalanced", 'echo "also', "trailing\\"])
def test_invalid_patterns_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidPattern) as info:
        parse_pattern(text)
    assert repr(text) in str(info.value)


def test_pattern_text_is_canonical() -> None:
    assert pattern_text(parse_pattern("df    -h   *")) == "df -h '*'"
    assert pattern_text(parse_pattern("echo 'a b'")) == pattern_text(parse_pattern('echo "a b"'))


def test_empty_pattern_matches_nothing() -> None:
    assert argv_matches((), ["uptime"]) is False
