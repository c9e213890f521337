"""The agent-local allowlist: loading a policy file strictly, deny over allow, default refuse, a stable digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from teleops.agent.allowlist import Allowlist, PolicyFileError

POLICY = {
    "allow": ["uptime", "df *", "systemctl status *", "journalctl -u *.service *", "cat /var/log/*.log"],
    "deny": ["systemctl status --all *", "cat /var/log/secret*.log"],
}

# (argv, allowed?, deciding rule)
DECISIONS: list[tuple[list[str], bool, str | None]] = [
    (["uptime"], True, "uptime"),
    (["uptime", "-p"], False, None),
    (["df"], True, "df '*'"),
    (["df", "-h", "/"], True, "df '*'"),
    (["systemctl", "status", "nginx"], True, "systemctl status '*'"),
    (["systemctl", "status", "--all", "nginx"], False, "systemctl status --all '*'"),  # deny wins
    (["systemctl", "status", "--all"], False, "systemctl status --all '*'"),
    (["systemctl", "restart", "nginx"], False, None),
    (["journalctl", "-u", "nginx.service", "-n", "20"], True, "journalctl -u '*.service' '*'"),
    (["journalctl", "-u", "--output=x.service"], False, None),  # glob slot refuses a flag
    (["cat", "/var/log/syslog.log"], True, "cat '/var/log/*.log'"),
    (["cat", "/var/log/secret-keys.log"], False, "cat '/var/log/secret*.log'"),
    (["rm", "-rf", "/"], False, None),
    (["sh", "-c", "uptime"], False, None),
    ([], False, None),
]


@pytest.mark.parametrize(("argv", "allowed", "rule"), DECISIONS, ids=[" ".join(d[0]) or "<empty>" for d in DECISIONS])
def test_decisions(argv: list[str], allowed: bool, rule: str | None) -> None:
    decision = Allowlist.from_mapping(POLICY).check(argv)
    assert decision.allowed is allowed
    assert decision.rule == rule
    assert decision.reason


def test_refusal_reason_says_what_to_do() -> None:
    decision = Allowlist.from_mapping(POLICY).check(["reboot"])
    assert "no rule allows it" in decision.reason
    assert "admin" in decision.reason


def test_deny_reason_names_the_rule() -> None:
    decision = Allowlist.from_mapping(POLICY).check(["systemctl", "status", "--all"])
    assert "deny rule" in decision.reason
    assert "systemctl status --all" in decision.reason


def test_without_a_policy_everything_is_refused() -> None:
    assert Allowlist.deny_all().check(["uptime"]).allowed is False


def test_allow_all_only_in_embedded_mode() -> None:
    with pytest.raises(PolicyFileError, match="embedded"):
        Allowlist.from_mapping({"allow_all": True})
    local = Allowlist.from_mapping({"allow_all": True, "deny": ["reboot *"]}, embedded=True)
    assert local.check(["anything", "--goes"]).allowed is True
    assert local.check(["reboot"]).allowed is False  # deny still wins
    assert Allowlist.local_allow_all().check(["uname", "-a"]).allowed is True
    assert Allowlist.local_allow_all().check([]).allowed is False


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (["uptime"], "expected a mapping"),
        ({"allow": "uptime"}, "'allow' must be a list"),
        ({"allow": ["uptime", 3]}, "allow[1] must be a string"),
        ({"allow": ["echo 'unbalanced"]}, "allow[0]"),
        ({"deny": [""]}, "deny[0]"),
        ({"allow": ["uptime"], "alow": ["df"]}, "unknown key(s) alow"),
        ({"allow_all": "yes"}, "'allow_all' must be true or false"),
    ],
)
def test_invalid_policy_is_refused_naming_the_problem(data: object, problem: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        Allowlist.from_mapping(data)
    assert problem in str(info.value)


def test_load_reads_yaml_and_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "policy.yaml"
    good.write_text('allow: ["uptime", "df *"]\ndeny: ["df --exclude-type=*"]\n')
    assert Allowlist.load(good).check(["df", "-h"]).allowed is True

    bad = tmp_path / "bad.yaml"
    bad.write_text("allow: [uptime\n")
    with pytest.raises(PolicyFileError, match="not valid YAML") as info:
        Allowlist.load(bad)
    assert str(bad) in str(info.value)

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("allow: [3]\n")
    with pytest.raises(PolicyFileError) as info:
        Allowlist.load(wrong)
    assert str(wrong) in str(info.value)
    assert "allow[0]" in str(info.value)

    with pytest.raises(PolicyFileError, match="cannot read policy file"):
        Allowlist.load(tmp_path / "missing.yaml")


def test_empty_file_allows_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert Allowlist.load(empty).check(["uptime"]).allowed is False


def test_digest_ignores_spacing_quoting_order_and_duplicates() -> None:
    a = Allowlist.from_mapping({"allow": ["df *", "uptime"], "deny": ["df --all"]})
    b = Allowlist.from_mapping({"allow": ["uptime", "df   '*'", "uptime"], "deny": ['df "--all"']})
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64


def test_digest_changes_with_the_rules() -> None:
    base = Allowlist.from_mapping({"allow": ["uptime"]}).digest()
    assert Allowlist.from_mapping({"allow": ["uptime", "df *"]}).digest() != base
    assert Allowlist.from_mapping({"allow": ["uptime"], "deny": ["uptime"]}).digest() != base
    assert Allowlist.from_mapping({"allow": ["uptime"], "allow_all": True}, embedded=True).digest() != base
    assert (
        Allowlist.from_mapping({"deny": ["uptime"]}).digest() != Allowlist.from_mapping({"allow": ["uptime"]}).digest()
    )
