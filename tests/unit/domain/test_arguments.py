"""The executing-argument table (docs/threat-model.md T11), row by row: for every program and every flag, word or position
in `EXECUTORS` that runs code or another program, a broad rule (``BIN *``, and ``*``) refuses it with the flag
in the reason, and a rule that spells it out allows it. Both sides use the same function (`judge`); the
controller's policy and the agent's allowlist are exercised on a sample in tests/security/test_pattern_containment.py."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from teleops.domain.arguments import EXECUTORS, Kind, executing_argument, judge, program_name
from teleops.domain.patterns import match_argv, parse_pattern


class Case(NamedTuple):
    argv: tuple[str, ...]
    named: str  # a pattern that spells the executing part out
    needle: str  # must appear in the refusal reason


def _example(word: str) -> str:
    return word.replace("*", "x")


def _cases() -> list[Case]:
    cases: list[Case] = []
    for name, spec in EXECUTORS.items():
        for flag in spec.flags:
            cases.append(Case((name, flag), f"{name} {flag} *", flag))
            if flag.startswith("--"):
                cases.append(Case((name, f"{flag}=x"), f"{name} {flag}=x *", flag))
        for word in spec.words:
            example = _example(word)
            cases.append(Case((name, example), f"{name} {example} *", example))
        for sub, flags in spec.sub_flags.items():
            for flag in flags:
                cases.append(Case((name, sub, flag), f"{name} {sub} {flag} *", flag))
        if spec.plus:
            cases.append(Case((name, "+x"), f"{name} +x *", "+x"))
        if spec.code:
            cases.append(Case((name, "x"), f"{name} x *", spec.code))
        if spec.assignments:
            cases.append(Case((name, "LD_PRELOAD=/tmp/x.so"), f"{name} LD_PRELOAD=/tmp/x.so", "LD_PRELOAD"))
        if spec.kind is Kind.WRAPPER:
            leading = ("1",) * spec.leading
            cases.append(Case((name, *leading, "sh"), " ".join((name, *leading, "sh")), "program"))
    return cases


CASES = _cases()


def _ids(case: Case) -> str:
    return " ".join(case.argv)


def test_the_table_covers_the_reviewed_binaries() -> None:
    for name in [
        "find", "tar", "git", "rsync", "awk", "gawk", "mawk", "nawk", "sed", "python", "python3", "perl", "ruby",
        "node", "php", "lua", "bash", "sh", "dash", "zsh", "ksh", "env", "xargs", "nice", "nohup", "timeout",
        "stdbuf", "setsid", "chroot", "ionice", "taskset", "flock", "watch", "time", "strace", "ltrace", "gdb",
        "ssh", "scp", "less", "man", "vim", "vi", "ed", "emacs", "zip", "dpkg", "apt", "apt-get", "docker",
        "kubectl", "mysql", "psql", "crontab", "at", "tcpdump", "openssl", "sudo",
    ]:  # fmt: skip
        assert name in EXECUTORS, name
    assert len(CASES) >= 200


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_wildcard_never_supplies_an_executing_argument(case: Case) -> None:
    for broad in (f"{case.argv[0]} *", "*"):
        verdict = judge(parse_pattern(broad), case.argv)
        assert verdict.fits, broad
        assert verdict.refusal is not None, f"{broad!r} let {case.argv} through"
        assert case.needle in verdict.refusal, verdict.refusal
        assert "wildcard" in verdict.refusal


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_rule_that_spells_it_out_allows_it(case: Case) -> None:
    verdict = judge(parse_pattern(case.named), case.argv)
    assert verdict.allowed, verdict.refusal


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_rule_granting_a_shell_is_not_second_guessed(case: Case) -> None:
    assert judge(parse_pattern("*"), case.argv, code=False).allowed


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        # spellings: abbreviations, clusters, attached values, paths and versions of the program
        (["tar", "xf", "a.tar", "--to-com=sh -c id"], "--to-command"),
        (["tar", "cIf", "sh -c id", "a.tar", "/etc"], "-I"),
        (["tar", "-cvzf", "a.tgz", "--checkpoint=1", "--checkpoint-action=exec=sh"], "--checkpoint-action"),
        (["rsync", "-avze", "sh -c id", "a:b", "c"], "-e"),
        (["ssh", "-oProxyCommand=sh -c id", "x"], "-o"),
        (["ssh", "-vo", "ProxyCommand sh", "x"], "-o"),
        (["perl", "-lne", "system q(id)"], "-e"),
        (["perl", "-MPOSIX;system(q(id))", "-e1"], "-M"),
        (["python3", "-Ic", "import os"], "-c"),
        (["/usr/bin/python3.11", "-c", "import os"], "-c"),
        (["sh", "-ec", "id"], "-c"),
        (["find", "/", "-maxdepth", "0", "-exec", "sh", "-c", "id", ";"], "-exec"),
        (["find", "--", "/", "-execdir", "id", ";"], "-execdir"),
        (["git", "--exec-path=/tmp", "log"], "--exec-path"),
        (["git", "ls-remote", "-u", "sh -c id", "x"], "-u"),
        (["git", "clone", "ext::sh -c id", "/tmp/x"], "ext::"),
        (["awk", 'BEGIN { system("id") }'], "awk program"),
        (["gawk", "-F:", 'BEGIN { system("id") }'], "awk program"),
        (["sed", "-n", "1e id", "/etc/hostname"], "sed script"),
        (["sed", "--expr=1e id", "/var/log/x"], "--expression"),
        (["env", "-i", "PATH=/tmp", "uptime"], "PATH"),
        (["env", "-u", "HOME", "sh"], "program"),
        (["xargs", "-0", "-n", "1", "sh"], "program"),
        (["nice", "-n", "10", "sh", "-c", "id"], "program"),
        (["timeout", "-s", "KILL", "5", "sh"], "program"),
        (["sudo", "-u", "root", "--", "sh"], "program"),
        (["busybox", "sh", "-c", "id"], "program"),
        (["watch", "-n", "1", "id"], "program"),
        (["docker", "container", "exec", "x", "sh"], "exec"),
        (["kubectl", "-n", "prod", "exec", "pod", "--", "sh"], "exec"),
        (["apt-get", "install", "./evil.deb"], ".deb"),
        (["vim", "-es", "+!id"], "+!id"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_executing_arguments_in_their_usual_spellings_are_refused(argv: list[str], needle: str) -> None:
    refusal = judge(parse_pattern("*"), argv).refusal
    assert refusal is not None
    assert needle in refusal


@pytest.mark.parametrize(
    ("pattern", "argv"),
    [
        # `*` grants programs on the host and their ordinary flags
        ("*", ["uptime"]),
        ("*", ["python3", "--version"]),
        ("*", ["python3", "/opt/tools/report.py", "-c", "x"]),  # a script file; its own arguments
        ("*", ["bash", "/usr/local/bin/backup.sh"]),
        ("*", ["awk", "-f", "/opt/tools/count.awk", "/var/log/syslog"]),
        ("*", ["perl", "-pi.bak", "/tmp/x"]),  # -i takes the rest of the cluster as its suffix: no -e there
        ("*", ["find", "/var/log", "-name", "*.gz", "-mtime", "+7"]),
        ("*", ["tar", "-tzvf", "/backups/a.tgz"]),
        ("*", ["tar", "-xf", "I"]),  # a file named I, not -I
        ("*", ["git", "log", "-p", "--stat"]),
        ("*", ["git", "status", "-uno"]),  # -u is upload-pack only for clone/ls-remote
        ("*", ["rsync", "-avz", "/srv/a/", "/srv/b/"]),
        ("*", ["ssh", "-lroot", "-p", "22", "db-1", "uptime"]),
        ("*", ["docker", "ps", "-a"]),
        ("*", ["kubectl", "get", "pods"]),
        ("*", ["systemctl", "status", "nginx"]),
        ("*", ["echo", "python3", "-c", "x"]),  # echo is not in the table: its arguments are text
        # a rule that spells out the program or the flag
        ("find /var/log -name * -exec gzip {} ;", ["find", "/var/log", "-name", "a.log", "-exec", "gzip", "{}", ";"]),
        ("python3 -c *", ["python3", "-c", "print(1)"]),
        ("nice -n 10 uptime", ["nice", "-n", "10", "uptime"]),
        ("timeout * journalctl *", ["timeout", "30", "journalctl", "-u", "nginx"]),
        ("sudo -u * systemctl status *", ["sudo", "-u", "app", "systemctl", "status", "x"]),
        ("ssh -oConnectTimeout=* *", ["ssh", "-oConnectTimeout=5", "db-1"]),
        ("sed -n 1,20p /var/log/*", ["sed", "-n", "1,20p", "/var/log/syslog"]),
        ("env TERM=* top -b -n 1", ["env", "TERM=dumb", "top", "-b", "-n", "1"]),
    ],
)
def test_what_stays_allowed(pattern: str, argv: list[str]) -> None:
    verdict = judge(parse_pattern(pattern), argv)
    assert verdict.allowed, verdict.refusal


def test_a_named_wrapper_program_is_examined_in_turn() -> None:
    refusal = judge(parse_pattern("nice -n 10 find / *"), ["nice", "-n", "10", "find", "/", "-delete"]).refusal
    assert refusal is not None
    assert "-delete" in refusal
    refusal = judge(parse_pattern("timeout 5 env *"), ["timeout", "5", "env", "python3", "-c", "x"]).refusal
    assert refusal is not None
    assert "program" in refusal


def test_watch_runs_its_arguments_through_a_shell() -> None:
    refusal = judge(parse_pattern("watch df *"), ["watch", "df", "-h; id"]).refusal
    assert refusal is not None
    assert "sh -c" in refusal
    assert judge(parse_pattern("watch df -h"), ["watch", "df", "-h"]).allowed


def test_program_names_follow_paths_and_versions() -> None:
    assert program_name("/usr/bin/python3.11") == "python"
    assert program_name("python3") == "python3"
    assert program_name("/usr/local/bin/gawk") == "gawk"
    assert program_name("uptime") is None
    assert program_name("x11") is None


def test_deep_nesting_is_linear_and_still_refused() -> None:
    argv = ["nice", *(["nice"] * 3000), "find", "/", "-exec", "id", ";"]
    pattern = parse_pattern(" ".join(argv[:3002]) + " *")
    found = match_argv(pattern, argv)
    assert found is not None
    refusal = executing_argument(argv, found)
    assert refusal is not None
    assert "-exec" in refusal
