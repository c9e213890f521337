"""Patterns are containment (docs/threat-model.md T11, T12), checked on both sides with their public entry points: the
controller's `Policy.decide` and the agent's `Allowlist.check`.

- a path word (``/var/log/*``) admits only plain paths inside it: no ``..``, ``.``, ``//``, ``%2e``, NUL, no
  ``/proc/<pid>/root|cwd|fd``; ``*`` is one segment. Property-tested over generated paths;
- on the agent the path is resolved on the host: a symlink out of the directory is refused, naming the target;
- a wildcard never supplies an argument that runs code or another program (GTFOBins-style corpus below,
  written out here independently of the table in teleops.domain.arguments);
- what ``*`` grants is what docs/access-control.md says: programs, not code in the command.
"""

from __future__ import annotations

import os
import posixpath
import re
import string
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from teleops.agent.allowlist import Allowlist
from teleops.commands.command_line import split_command
from teleops.config.settings import parse_duration
from teleops.domain.policy import Policy, compile_policy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "access-control.md"

PATH_RULES = ["cat /var/log/*", "tail -n * /var/log/*"]


def policy_for(*commands: str) -> Policy:
    return compile_policy({"ops": [{"hosts": ["*"], "commands": list(commands)}]}, parse_duration=parse_duration)


def controller_allows(commands: list[str], argv: list[str]) -> bool:
    return policy_for(*commands).decide(user="alice", role="ops", host="web-1", argv=argv).allowed


def agent_allows(commands: list[str], argv: list[str]) -> bool:
    return Allowlist.from_mapping({"allow": commands}).check(argv).allowed


SIDES = {"controller": controller_allows, "agent": agent_allows}


def argv_for(rule: str, path: str) -> list[str]:
    return ["cat", path] if rule.startswith("cat") else ["tail", "-n", "5", path]


# -- path words: generated paths ----------------------------------------------------------------------------

SEGMENT = st.sampled_from(
    ["var", "log", "etc", "shadow", "..", ".", "", "proc", "self", "1", "root", "cwd", "fd", "task", "syslog",
     "%2e%2e", "%2E", "a.log", "nginx", "dev"]
)  # fmt: skip
PATHS = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=7).map(lambda s: "/var/log/" + "/".join(s)),
    st.lists(SEGMENT, min_size=1, max_size=7).map(lambda s: "/" + "/".join(s)),
)
PROC_LINK = re.compile(r"(^|/)proc/[^/]+/(task/[^/]+/)?(root|cwd|fd|map_files)(/|$)")


def plain_child_of_var_log(path: str) -> bool:
    name = path.removeprefix("/var/log/")
    return (
        path.startswith("/var/log/")
        and posixpath.normpath(path) == path
        and "/" not in name
        and name not in ("", ".", "..")
        and "%2e" not in name.lower()
    )


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("rule", PATH_RULES)
@settings(max_examples=300, deadline=None)
@given(path=PATHS)
@example(path="/var/log/../../etc/shadow")
@example(path="/var/log/..")
@example(path="/var/log/nginx/../../../etc/shadow")
@example(path="/var/log/./syslog")
@example(path="/var/log//syslog")
@example(path="/var/log/%2e%2e/%2e%2e/etc/shadow")
@example(path="/var/log/proc/self/root")
def test_generated_paths_never_leave_var_log(side: str, rule: str, path: str) -> None:
    allowed = SIDES[side]([rule], argv_for(rule, path))
    segments = path.split("/")
    if allowed:
        assert plain_child_of_var_log(path), path
    if not posixpath.normpath(path).startswith("/var/log/"):
        assert not allowed, path
    if ".." in segments or "." in segments[1:] or "//" in path:
        assert not allowed, path
    if PROC_LINK.search(path):
        assert not allowed, path


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("rule", PATH_RULES)
@settings(max_examples=200, deadline=None)
@given(
    name=st.text(alphabet=string.ascii_letters + string.digits + "._-", min_size=1, max_size=30).filter(
        lambda n: n not in (".", "..")
    )
)
def test_plain_files_under_var_log_are_allowed(side: str, rule: str, name: str) -> None:
    assert SIDES[side]([rule], argv_for(rule, f"/var/log/{name}")), name


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize(
    "path",
    [
        "/proc/self/root/etc/shadow",
        "/proc/1/root",
        "/proc/1/cwd/x",
        "/proc/self/fd/3",
        "/proc/1/task/1/root/etc/shadow",
        "/proc/thread-self/root/etc/shadow",
        "/proc/self/map_files/x",
    ],
)
def test_proc_links_are_refused_even_under_a_proc_rule(side: str, path: str) -> None:
    assert not SIDES[side](["cat /proc/**"], ["cat", path])
    assert SIDES[side](["cat /proc/**"], ["cat", "/proc/1/status"])


@pytest.mark.parametrize("side", sorted(SIDES))
def test_star_is_one_segment_and_doublestar_is_any(side: str) -> None:
    allows = SIDES[side]
    assert not allows(["cat /var/log/*"], ["cat", "/var/log/nginx/access.log"])
    assert allows(["cat /var/log/**"], ["cat", "/var/log/nginx/access.log"])
    assert allows(["cat /var/log/**/*.gz"], ["cat", "/var/log/a.gz"])
    assert allows(["cat /var/log/**/*.gz"], ["cat", "/var/log/nginx/old/a.gz"])
    assert not allows(["cat /var/log/**"], ["cat", "/var/log"])
    assert not allows(["cat /var/log/**"], ["cat", "/var/log/nginx/../../../etc/shadow"])
    assert not allows(["journalctl -u *.service"], ["journalctl", "-u", "../../x.service"])


def test_the_refusal_says_which_argument_and_why() -> None:
    decision = policy_for("tail -n * /var/log/*").decide(
        user="alice", role="ops", host="web-1", argv=["tail", "-n", "5", "/var/log/../../etc/shadow"]
    )
    assert not decision.allowed
    assert "argument 3 '/var/log/../../etc/shadow'" in decision.reason
    assert "'..' segment" in decision.reason
    agent = Allowlist.from_mapping({"allow": ["tail -n * /var/log/*"]}).check(
        ["tail", "-n", "5", "/var/log/%2e%2e/shadow"]
    )
    assert not agent.allowed
    assert "percent-encoded" in agent.reason


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize(
    "path",
    ["/var/log/../../etc/shadow", "//etc/shadow", "/etc/./shadow", "/proc/self/root/etc/shadow", "/etc//shadow"],
)
def test_deny_rules_see_through_path_spellings(side: str, path: str) -> None:
    if side == "controller":
        policy = compile_policy(
            {
                "ops": [
                    {"hosts": ["*"], "commands": ["cat *"]},
                    {"hosts": ["*"], "commands": ["cat /etc/shadow"], "effect": "deny"},
                ]
            },
            parse_duration=parse_duration,
        )
        decision = policy.decide(user="alice", role="ops", host="web-1", argv=["cat", path])
        assert not decision.allowed
        assert "deny" in decision.rule
    else:
        decision_agent = Allowlist.from_mapping({"allow": ["cat *"], "deny": ["cat /etc/shadow"]}).check(["cat", path])
        assert not decision_agent.allowed
        assert decision_agent.rule == "cat /etc/shadow"


# -- the agent resolves symlinks on the host ----------------------------------------------------------------


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    """tmp/logs with a real file, a link that stays inside, and links that escape to tmp/secret."""
    logs = tmp_path / "logs"
    secret = tmp_path / "secret"
    logs.mkdir()
    secret.mkdir()
    (secret / "shadow").write_text("root:x\n")
    (logs / "app.log").write_text("ok\n")
    (logs / "current").symlink_to(logs / "app.log")
    (logs / "evil").symlink_to(secret / "shadow")
    (logs / "up").symlink_to("..")  # a relative link to the parent
    (logs / "dir").symlink_to(secret)
    return logs


def test_a_symlink_out_of_the_directory_is_refused_naming_its_target(logs: Path) -> None:
    allowlist = Allowlist.from_mapping({"allow": [f"cat {logs}/*"]})
    assert allowlist.check(["cat", f"{logs}/app.log"]).allowed
    assert allowlist.check(["cat", f"{logs}/current"]).allowed  # a link that stays inside is fine
    decision = allowlist.check(["cat", f"{logs}/evil"])
    assert not decision.allowed
    target = os.path.realpath(logs.parent / "secret" / "shadow")
    assert f"argument 1 '{logs}/evil' resolves to '{target}', outside {logs}/*" in decision.reason
    assert decision.rule == f"cat '{logs}/*'"


def test_links_to_directories_and_parents_are_refused(logs: Path) -> None:
    allowlist = Allowlist.from_mapping({"allow": [f"cat {logs}/**"]})
    assert allowlist.check(["cat", f"{logs}/app.log"]).allowed
    for escape in (f"{logs}/dir/shadow", f"{logs}/up/secret/shadow"):
        decision = allowlist.check(["cat", escape])
        assert not decision.allowed, escape
        assert "resolves to" in decision.reason


def test_a_rule_over_a_symlinked_directory_resolves_the_rule_too(tmp_path: Path, logs: Path) -> None:
    alias = tmp_path / "logs-alias"
    alias.symlink_to(logs)
    allowlist = Allowlist.from_mapping({"allow": [f"cat {alias}/*"]})
    assert allowlist.check(["cat", f"{alias}/app.log"]).allowed
    assert not allowlist.check(["cat", f"{alias}/evil"]).allowed


def test_relative_path_rules_need_the_working_directory(logs: Path) -> None:
    allowlist = Allowlist.from_mapping({"allow": ["cat logs/*"]})
    refused = allowlist.check(["cat", "logs/app.log"])
    assert not refused.allowed
    assert "relative path" in refused.reason
    assert allowlist.check(["cat", "logs/app.log"], cwd=str(logs.parent)).allowed
    assert not allowlist.check(["cat", "logs/evil"], cwd=str(logs.parent)).allowed


def test_the_agent_deny_rule_sees_the_resolved_path(logs: Path) -> None:
    secret = logs.parent / "secret" / "shadow"
    allowlist = Allowlist.from_mapping({"allow": ["cat *"], "deny": [f"cat {os.path.realpath(secret)}"]})
    assert not allowlist.check(["cat", f"{logs}/evil"]).allowed
    assert allowlist.check(["cat", f"{logs}/app.log"]).allowed


# -- a wildcard never supplies code or a program: a GTFOBins-style corpus -----------------------------------

CORPUS: list[tuple[str, str, str]] = [
    # (rule, command, what the refusal must name)
    ("find *", "find / -maxdepth 0 -exec /tmp/x \\;", "-exec"),
    ("find *", "find /var/log -execdir id \\;", "-execdir"),
    ("find *", "find /var/log -ok id \\;", "-ok"),
    ("find *", "find / -delete", "-delete"),
    ("find *", "find / -fprintf /etc/cron.d/x '* * * * * root id'", "-fprintf"),
    ("tar *", "tar -cf /dev/null /etc --checkpoint=1 --checkpoint-action=exec=sh", "--checkpoint-action"),
    ("tar *", "tar -xf a.tar --to-command='sh -c id'", "--to-command"),
    ("tar *", "tar -cf a.tar -I 'sh -c id' /etc", "-I"),
    ("tar *", "tar -cf a.tar --use-compress-program=sh /etc", "--use-compress-program"),
    ("tar *", "tar -cf a.tar -F 'sh -c id' /etc", "-F"),
    ("tar *", "tar -cf x:y --rsh-command=/tmp/x /etc", "--rsh-command"),
    ("git *", "git -c core.pager='sh -c id' log", "-c"),
    ("git *", "git --config-env=core.sshCommand=X fetch", "--config-env"),
    ("git *", "git fetch --upload-pack='sh -c id' origin", "--upload-pack"),
    ("git *", "git push --receive-pack=/tmp/x origin", "--receive-pack"),
    ("git *", "git clone ext::'sh -c id' /tmp/x", "ext::"),
    ("git *", "git rebase -x id HEAD~1", "-x"),
    ("rsync *", "rsync -e 'sh -c id' x:/a /b", "-e"),
    ("rsync *", "rsync --rsync-path='sh -c id' x:/a /b", "--rsync-path"),
    ("awk *", "awk 'BEGIN { system(\"id\") }'", "awk program"),
    ("gawk *", "gawk 'BEGIN { \"id\" | getline x; print x }'", "awk program"),
    ("sed *", "sed -n '1e id' /etc/hostname", "sed script"),
    ("*", "python3 -c 'import os; os.system(\"id\")'", "-c"),
    ("*", "python -c 'import os'", "-c"),
    ("*", "perl -e 'exec \"/bin/sh\"'", "-e"),
    ("*", "ruby -e 'exec \"/bin/sh\"'", "-e"),
    ("*", 'node -e \'require("child_process").execSync("id")\'', "-e"),
    ("*", "node --eval 'process.exit()'", "--eval"),
    ("*", "php -r 'system(\"id\");'", "-r"),
    ("*", "lua -e 'os.execute(\"id\")'", "-e"),
    ("*", "env sh", "program"),
    ("*", "env -i sh", "program"),
    ("*", "env LD_PRELOAD=/tmp/x.so uptime", "LD_PRELOAD"),
    ("*", "xargs sh", "program"),
    ("*", "xargs -a /etc/hostname sh", "program"),
    ("*", "nice /bin/sh", "program"),
    ("*", "nohup sh", "program"),
    ("*", "timeout 5 sh", "program"),
    ("*", "stdbuf -oL sh", "program"),
    ("*", "setsid sh", "program"),
    ("*", "ionice -c 3 sh", "program"),
    ("*", "taskset 1 sh", "program"),
    ("*", "flock /tmp/lock sh", "program"),
    ("*", "flock /tmp/lock -c id", "-c"),
    ("*", "chroot / sh", "directory"),
    ("*", "watch id", "program"),
    ("*", "time sh", "program"),
    ("*", "strace -o /dev/null sh", "program"),
    ("*", "ltrace -b sh", "program"),
    ("*", "gdb -nx -ex '!id' -ex quit", "-ex"),
    ("*", "sudo reboot", "program"),
    ("*", "sudo -s", "-s"),
    ("*", "ssh -o ProxyCommand='sh -c id' x", "-o"),
    ("*", "ssh -F /tmp/evil x", "-F"),
    ("*", "scp -S /tmp/evil x:/a /b", "-S"),
    ("*", "man -P 'sh -c id' ls", "-P"),
    ("*", "less '+!id' /etc/hostname", "+!id"),
    ("*", "vim -c ':!id'", "-c"),
    ("*", "ed '!id'", "!id"),
    ("*", "emacs --eval '(shell-command \"id\")'", "--eval"),
    ("*", "zip /tmp/x.zip /etc/hostname -T -TT 'sh -c id'", "-T"),
    ("*", "dpkg -i /tmp/x.deb", "-i"),
    ("*", "apt-get update -o APT::Update::Pre-Invoke::=id", "-o"),
    ("*", "docker exec web sh", "exec"),
    ("*", "docker run --privileged -v /:/host alpine sh", "run"),
    ("*", "kubectl exec pod -- sh", "exec"),
    ("*", "mysql -e '\\! id'", "-e"),
    ("*", "psql -c '\\! id'", "-c"),
    ("*", "crontab /tmp/x", "crontab"),
    ("*", "at -f /tmp/x now", "-f"),
    ("*", "tcpdump -ln -i lo -w /dev/null -W 1 -G 1 -z /tmp/x -Z root", "-z"),
    ("*", "openssl req -engine /tmp/x.so", "-engine"),
    ("*", "make --eval='$(shell id)'", "--eval"),
    ("*", "busybox sh", "program"),
]


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize(("rule", "command", "needle"), CORPUS, ids=[c[1] for c in CORPUS])
def test_a_wildcard_does_not_grant_code(side: str, rule: str, command: str, needle: str) -> None:
    argv = split_command(command)
    if side == "controller":
        decision = policy_for(rule).decide(user="alice", role="ops", host="web-1", argv=argv, text=command)
        assert not decision.allowed
        reason = decision.reason
    else:
        agent = Allowlist.from_mapping({"allow": [rule]}).check(argv)
        assert not agent.allowed
        reason = agent.reason
    assert needle in reason, reason


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize(
    ("rule", "command"),
    [
        ("find /var/log -name * -mtime +7 -exec gzip {} ;", "find /var/log -name *.log -mtime +7 -exec gzip {} \\;"),
        ("python3 -c *", "python3 -c 'print(1)'"),
        ("git -c color.ui=never log *", "git -c color.ui=never log -1"),
        ("nice -n 10 tar -czf /backups/etc.tgz /etc", "nice -n 10 tar -czf /backups/etc.tgz /etc"),
        ("timeout * journalctl -u *", "timeout 30 journalctl -u nginx -n 50"),
        ("*", "python3 /opt/tools/report.py --since 1h"),
    ],
)
def test_a_rule_that_spells_it_out_allows_it(side: str, rule: str, command: str) -> None:
    argv = split_command(command)
    assert SIDES[side]([rule], argv)


# -- what `*` grants: the docs' claim, true and tested ------------------------------------------------------


def default_admin(argv: list[str], text: str) -> tuple[bool, str]:
    decision = compile_policy(None, parse_duration=parse_duration).decide(
        user="root-person", role="admin", host="web-1", argv=argv, text=text
    )
    return decision.allowed, decision.reason


@pytest.mark.parametrize(
    ("command", "needle"),
    [
        ("python3 -c 'import os'", "python3 -c"),
        ("bash -c id", "may not start a shell"),
        ("env sh", "program env would run"),
        ("xargs sh", "program xargs would run"),
        ("env bash -c id", "may not start a shell"),
        ("perl -e 'exec \"/bin/sh\"'", "perl -e"),
        ("find / -exec sh \\;", "find -exec"),
        ("sudo reboot", "program sudo would run"),
    ],
)
def test_the_default_admin_gets_no_code_in_the_command(command: str, needle: str) -> None:
    allowed, reason = default_admin(split_command(command), command)
    assert not allowed
    assert needle in reason, reason


@pytest.mark.parametrize(
    "command", ["reboot", "rm -rf /tmp/cache", "ls -la /", "python3 /opt/tools/report.py", "sh /opt/x.sh", "sleep 1"]
)
def test_the_default_admin_gets_every_program(command: str) -> None:
    assert default_admin(split_command(command), command)[0]


def test_the_docs_say_what_star_grants() -> None:
    text = DOCS.read_text()
    assert "everything except a shell" not in text
    assert "### What `*` grants" in text
    for phrase in ("python3 -c", "env sh", "xargs sh", "find -exec", "not a sandbox", "TOCTOU"):
        assert phrase in text, phrase
