"""The agent allowlist applies the shared argument checks (docs/threat-model.md T11, T12) and resolves paths on the host."""

from __future__ import annotations

from pathlib import Path

from teleops.agent.allowlist import Allowlist


def test_an_executing_flag_from_a_wildcard_is_refused_naming_rule_and_flag() -> None:
    allowlist = Allowlist.from_mapping({"allow": ["find *", "find /var/log -name * -delete"]})
    decision = allowlist.check(["find", "/", "-exec", "sh", ";"])
    assert not decision.allowed
    assert decision.rule == "find '*'"
    assert "find -exec" in decision.reason
    assert "rule \"find '*'\" fits" in decision.reason
    assert allowlist.check(["find", "/var/log", "-name", "x.gz", "-delete"]).allowed
    assert not allowlist.check(["find", "/var/log", "-delete"]).allowed


def test_a_whole_command_star_on_the_agent_grants_programs_not_code() -> None:
    allowlist = Allowlist.from_mapping({"allow": ["*"]})
    assert allowlist.check(["uptime"]).allowed
    assert allowlist.check(["python3", "/opt/tools/report.py"]).allowed
    for argv in (["python3", "-c", "x"], ["bash", "-c", "id"], ["env", "sh"], ["xargs", "sh"]):
        assert not allowlist.check(argv).allowed, argv


def test_the_embedded_allow_all_agent_leaves_decisions_to_the_controller() -> None:
    assert Allowlist.local_allow_all().check(["python3", "-c", "x"]).allowed


def test_a_later_rule_can_still_allow_what_an_earlier_one_refuses(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "evil").symlink_to("/etc/hostname")
    allowlist = Allowlist.from_mapping({"allow": [f"cat {tmp_path}/logs/*", "cat /etc/hostname"]})
    assert not allowlist.check(["cat", f"{tmp_path}/logs/evil"]).allowed
    assert allowlist.check(["cat", "/etc/hostname"]).allowed


def test_the_working_directory_resolves_relative_path_words(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("x")
    (tmp_path / "logs" / "b.log").symlink_to(tmp_path / "a-secret")
    allowlist = Allowlist.from_mapping({"allow": ["cat logs/*.log"]})
    assert allowlist.check(["cat", "logs/a.log"], cwd=str(tmp_path)).allowed
    refused = allowlist.check(["cat", "logs/b.log"], cwd=str(tmp_path))
    assert not refused.allowed
    assert "resolves to" in refused.reason
    assert "relative path" in allowlist.check(["cat", "logs/a.log"]).reason
