"""Path words in patterns (docs/threat-model.md T12): what a path in a pattern means, lexically (the controller's view)."""

from __future__ import annotations

import pytest

from teleops.domain.arguments import resolved_refusal
from teleops.domain.patterns import (
    InvalidPattern,
    argv_matches,
    deny_matches,
    match_argv,
    parse_pattern,
    path_glob_matches,
    path_problem,
)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/var/log/syslog", None),
        ("/var/log/.hidden", None),
        ("relative/name", None),
        ("/var/log/../etc", "'..' segment"),
        ("/var/log/./x", "'.' segment"),
        ("/var//log", "empty segment"),
        ("/var/log/", "empty segment"),
        ("//etc/shadow", "starts with '//'"),
        ("/var/log/x\x00", "NUL"),
        ("/var/log/%2e%2e/etc", "percent-encoded"),
        ("/var/log/%2F", "percent-encoded"),
        ("/proc/self/root/etc/shadow", "/proc/self/root"),
        ("/proc/1/cwd", "/proc/1/cwd"),
        ("/proc/1/fd/0", "/proc/1/fd"),
        ("/proc/1/task/2/root/x", "/proc/1/task/2/root"),
        ("/host/proc/1/root/etc/shadow", "/proc/1/root"),  # a host /proc mounted elsewhere
        ("/dev/fd/3", "/dev/fd"),
        ("/proc/1/status", None),
        ("/proc/rootfs", None),
    ],
)
def test_path_problems(path: str, problem: str | None) -> None:
    found = path_problem(path)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/var/log/*", "/var/log/syslog", True),
        ("/var/log/*", "/var/log/nginx/access.log", False),
        ("/var/log/*.log", "/var/log/a.log", True),
        ("/var/log/*/*.log", "/var/log/nginx/a.log", True),
        ("/var/log/**", "/var/log/a", True),
        ("/var/log/**", "/var/log/a/b/c", True),
        ("/var/log/**", "/var/log", False),
        ("/var/log/**/*.gz", "/var/log/a.gz", True),
        ("/var/log/**/*.gz", "/var/log/a/b/c.gz", True),
        ("/var/log/**/*.gz", "/var/log/a/b/c.log", False),
        ("/**/x", "/x", True),
        ("/srv/**/current/**", "/srv/app/current/log/a", True),
        ("/srv/**/current/**", "/srv/app/log/a", False),
    ],
)
def test_segment_globs(pattern: str, path: str, matches: bool) -> None:
    assert path_glob_matches(pattern, path) is matches


@pytest.mark.parametrize(
    "text", ["cat /var/log/**.gz", "cat /var/log/../*", "cat /var/log//*", "cat ./logs/*", "cat /proc/*/root/**"]
)
def test_path_words_that_are_not_plain_paths_do_not_load(text: str) -> None:
    with pytest.raises(InvalidPattern, match="path"):
        parse_pattern(text)


def test_an_option_value_can_be_a_path_word() -> None:
    pattern = parse_pattern("journalctl --file=/var/log/journal/*")
    assert argv_matches(pattern, ["journalctl", "--file=/var/log/journal/system.journal"])
    assert not argv_matches(pattern, ["journalctl", "--file=/var/log/journal/../../../etc/shadow"])
    assert not argv_matches(pattern, ["journalctl", "--file=/etc/shadow"])
    assert not argv_matches(pattern, ["journalctl", "--files=/var/log/journal/x"])
    found = match_argv(pattern, ["journalctl", "--file=/var/log/journal/../x"])
    assert found is not None
    assert found.problem is not None
    assert "argument 1" in found.problem


def test_globs_without_a_slash_stay_within_one_name() -> None:
    assert not argv_matches(parse_pattern("journalctl -u *.service"), ["journalctl", "-u", "../../x.service"])
    assert not argv_matches(parse_pattern("diff * /var/log/*"), ["diff", "/etc/shadow", "/var/log/x"])
    assert argv_matches(parse_pattern("diff ** /var/log/*"), ["diff", "/etc/shadow", "/var/log/x"])  # ** says so


@pytest.mark.parametrize(
    "arg", ["/etc/shadow", "/var/log/../../etc/shadow", "//etc/shadow", "/etc/./shadow", "/proc/self/root/etc/shadow"]
)
def test_deny_patterns_see_the_normal_form(arg: str) -> None:
    assert deny_matches(parse_pattern("cat /etc/shadow"), ["cat", arg])
    assert deny_matches(parse_pattern("cat /etc/*"), ["cat", arg])


def test_deny_globs_still_cross_slashes() -> None:
    assert deny_matches(parse_pattern("cat /etc/*"), ["cat", "/etc/ssh/sshd_config"])
    assert deny_matches(parse_pattern("rm *"), ["rm", "-rf", "/"])
    assert not deny_matches(parse_pattern("cat /etc/*"), ["cat", "/var/log/syslog"])


def test_deny_patterns_use_the_resolver_they_are_given() -> None:
    links = {"/var/log/x": "/etc/shadow"}
    assert deny_matches(parse_pattern("cat /etc/shadow"), ["cat", "/var/log/x"], resolve=lambda p: links.get(p, p))
    assert not deny_matches(parse_pattern("cat /etc/shadow"), ["cat", "/var/log/x"])


def test_resolution_uses_the_hosts_view_of_both_sides() -> None:
    links = {"/var/run": "/run", "/var/run/app.pid": "/run/app.pid", "/var/log/x": "/etc/shadow"}

    def realpath(path: str) -> str:
        return links.get(path, path)

    found = match_argv(parse_pattern("cat /var/run/*.pid"), ["cat", "/var/run/app.pid"])
    assert found is not None
    assert resolved_refusal(["cat", "/var/run/app.pid"], found, realpath=realpath) is None
    found = match_argv(parse_pattern("cat /var/log/*"), ["cat", "/var/log/x"])
    assert found is not None
    refusal = resolved_refusal(["cat", "/var/log/x"], found, realpath=realpath)
    assert refusal == "argument 1 '/var/log/x' resolves to '/etc/shadow', outside /var/log/*"
