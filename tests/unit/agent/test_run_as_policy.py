"""The policy's run_as: per-rule users, the unprivileged default, root only per rule (docs/threat-model.md T33)."""

from __future__ import annotations

import pytest

from teleops.agent.allowlist import DEFAULT_RUN_AS, Allowlist, PolicyFileError


def test_a_rule_without_run_as_runs_as_the_default_and_a_rule_with_one_as_that_user() -> None:
    policy = Allowlist.from_mapping({"allow": ["df *", {"command": "systemctl restart nginx", "run_as": "root"}]})
    plain = policy.check(["df", "-h"])
    named = policy.check(["systemctl", "restart", "nginx"])
    assert plain.allowed
    assert named.allowed
    assert policy.runs_as(plain, agent_is_root=True) == DEFAULT_RUN_AS == "nobody"
    assert policy.runs_as(named, agent_is_root=True) == "root"
    # An agent that is not root never switches: it runs everything as itself.
    assert policy.runs_as(plain, agent_is_root=False) is None


def test_the_policy_default_applies_to_plain_rules_and_to_allow_all() -> None:
    policy = Allowlist.from_mapping({"run_as": "daemon", "allow": ["uptime"]})
    assert policy.runs_as(policy.check(["uptime"]), agent_is_root=True) == "daemon"
    embedded = Allowlist.local_allow_all("daemon")
    assert embedded.runs_as(embedded.check(["id"]), agent_is_root=True) == "daemon"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"run_as": "root", "allow": ["id"]}, "name root only on the rules that need it"),
        ({"run_as": 0, "allow": ["id"]}, "'run_as' must be a user name"),
        ({"run_as": "bad user", "allow": ["id"]}, "'run_as' must be a user name"),
        ({"allow": [{"command": "id", "run_as": "$(reboot)"}]}, "allow[0].run_as must be a user name"),
        ({"allow": [{"run_as": "root"}]}, "allow[0].command must be a string"),
        ({"allow": [{"command": "id", "as": "root"}]}, "unknown key(s) as"),
        ({"allow": [["id"]]}, "allow[0] must be a string like 'df *' or {command"),
    ],
)
def test_bad_run_as_entries_are_refused_naming_the_entry(data: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        Allowlist.from_mapping(data)
    assert message in str(caught.value)


def test_users_are_checked_at_start_a_non_root_agent_may_name_only_itself() -> None:
    policy = Allowlist.from_mapping({"allow": [{"command": "id", "run_as": "root"}]})
    policy.check_users(euid=0)
    with pytest.raises(PolicyFileError, match="runs as uid 1000, not root, so it cannot run commands as another"):
        policy.check_users(euid=1000)
    # The default (nobody) does not apply to a non-root agent, so a plain policy is fine there.
    Allowlist.from_mapping({"allow": ["id"]}).check_users(euid=1000)
    with pytest.raises(PolicyFileError, match="no such user on this host"):
        Allowlist.from_mapping({"run_as": "no-such-user-teleops", "allow": ["id"]}).check_users(euid=0)


def test_the_digest_says_who_runs_and_is_unchanged_for_policies_without_run_as() -> None:
    plain = Allowlist.from_mapping({"allow": ["id"]})
    assert plain.digest() == Allowlist.from_mapping({"allow": [{"command": "id"}], "run_as": "nobody"}).digest()
    assert plain.digest() != Allowlist.from_mapping({"allow": [{"command": "id", "run_as": "root"}]}).digest()
    assert plain.digest() != Allowlist.from_mapping({"allow": ["id"], "run_as": "daemon"}).digest()
