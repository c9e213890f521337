"""The host's say over a command's environment and directory (docs/threat-model.md T14): `env:` and `cwd:` in the agent's
policy file are allowlists of exact names and directories, default none (and only `/`); a controller-sent
variable or directory the policy does not list refuses the whole command; loader/interpreter variables stay
refused whatever the policy, and a policy that lists one does not load."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from teleops.agent.allowlist import Allowlist, PolicyFileError
from teleops.agent.environment import (
    FIXED_PATH,
    EnvironmentRefused,
    EnvPolicy,
    build_environment,
    check_cwd,
    install_policy,
    installed_policy,
)
from teleops.agent.main import AgentSettings, AgentSetupError, build_agent

POLICY_FILE = "/etc/teleops/agent-policy.yaml"
TERM_ONLY = EnvPolicy(env=frozenset({"TERM"}), source=POLICY_FILE)


@pytest.fixture(autouse=True)
def no_leftover_policy() -> Iterator[None]:
    """Whatever a test installs process-wide is undone, so other tests see the library default."""
    previous = installed_policy()
    yield
    install_policy(previous)


# -- build_environment with a host policy -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_KEY_0",
        "GIT_CONFIG_PARAMETERS",
        "LD_PRELOAD",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
        "PERL5OPT",
        "MY_APP_MODE",  # harmless, but not listed: refused all the same
    ],
)
def test_a_variable_the_policy_does_not_list_refuses_the_command(name: str) -> None:
    with pytest.raises(EnvironmentRefused) as info:
        build_environment({name: "x"}, home="/root", policy=TERM_ONLY)
    message = str(info.value)
    assert f"environment variable {name} is not permitted by this host's policy (env: [TERM])" in message


def test_a_harmless_unlisted_name_says_how_to_permit_it() -> None:
    with pytest.raises(EnvironmentRefused) as info:
        build_environment({"MY_APP_MODE": "check"}, home="/root", policy=TERM_ONLY)
    assert str(info.value) == (
        "environment variable MY_APP_MODE is not permitted by this host's policy (env: [TERM]); "
        f"add it under env: in {POLICY_FILE} if it is safe"
    )


def test_a_dangerous_unlisted_name_says_no_policy_can_permit_it() -> None:
    with pytest.raises(EnvironmentRefused) as info:
        build_environment({"GIT_CONFIG_COUNT": "1"}, home="/root", policy=TERM_ONLY)
    assert "no policy can permit it" in str(info.value)
    assert "add it under env:" not in str(info.value)


def test_every_unlisted_name_is_named_and_nothing_is_dropped() -> None:
    request = {"TERM": "xterm", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor", "APP": "1"}
    with pytest.raises(EnvironmentRefused) as info:
        build_environment(request, home="/root", policy=TERM_ONLY)
    message = str(info.value)
    assert "environment variables APP, GIT_CONFIG_COUNT, GIT_CONFIG_KEY_0 are not permitted" in message
    assert f"add APP under env: in {POLICY_FILE}" in message
    assert "GIT_CONFIG_COUNT, GIT_CONFIG_KEY_0 control what gets loaded or executed" in message


def test_a_listed_benign_name_passes_through() -> None:
    env = build_environment({"TERM": "xterm-256color"}, home="/var/lib/teleops-agent", policy=TERM_ONLY)
    assert env == {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "HOME": "/var/lib/teleops-agent", "TERM": "xterm-256color"}


def test_the_default_policy_permits_no_variable() -> None:
    assert build_environment({}, home="/", policy=EnvPolicy()) == {"PATH": FIXED_PATH, "LANG": "C.UTF-8", "HOME": "/"}
    with pytest.raises(EnvironmentRefused, match="TERM is not permitted by this host's policy"):
        build_environment({"TERM": "xterm"}, home="/", policy=EnvPolicy())


def test_names_are_exact_and_case_sensitive() -> None:
    with pytest.raises(EnvironmentRefused, match="term is not permitted"):
        build_environment({"term": "x"}, home="/", policy=TERM_ONLY)


@pytest.mark.parametrize(
    "name", ["GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "GIT_DIR", "XDG_CONFIG_HOME", "PERL5DB", "RUBYOPT"]
)
def test_the_second_line_refuses_git_and_interpreter_variables_without_a_policy(name: str) -> None:
    """Even the runner used as a library (no host policy installed) never passes these on."""
    with pytest.raises(EnvironmentRefused, match=name):
        build_environment({name: "x"}, home="/")


def test_a_policy_built_around_the_loader_check_still_cannot_pass_a_dangerous_name() -> None:
    """A hand-made EnvPolicy (not from a file) listing LD_PRELOAD: the second line still refuses it."""
    lax = EnvPolicy(env=frozenset({"LD_PRELOAD"}))
    with pytest.raises(EnvironmentRefused, match="LD_PRELOAD may not be set"):
        build_environment({"LD_PRELOAD": "/tmp/x.so"}, home="/", policy=lax)


# -- cwd -----------------------------------------------------------------------------------------------------


def test_root_is_always_a_permitted_directory_and_others_must_be_listed() -> None:
    check_cwd("/", EnvPolicy())
    check_cwd("/srv/app", EnvPolicy(cwd=frozenset({"/", "/srv/app"})))
    with pytest.raises(EnvironmentRefused) as info:
        check_cwd("/tmp/repo", EnvPolicy(source=POLICY_FILE))
    assert str(info.value) == (
        "working directory '/tmp/repo' is not permitted by this host's policy (cwd: [/]); "
        f"add it under cwd: in {POLICY_FILE} if commands may run there"
    )


@pytest.mark.parametrize("cwd", ["/srv/app/", "/srv/app/.", "/srv/./app", "/srv/app/../../tmp", "//srv/app"])
def test_a_directory_is_compared_exactly_not_resolved(cwd: str) -> None:
    with pytest.raises(EnvironmentRefused, match="is not permitted by this host's policy"):
        check_cwd(cwd, EnvPolicy(cwd=frozenset({"/", "/srv/app"})))


# -- the policy file -----------------------------------------------------------------------------------------


def test_policy_file_env_and_cwd_are_read(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow: ['git status']\nenv: [TERM, MY_APP_MODE]\ncwd: [/srv/app]\n")
    allowlist = Allowlist.load(path)
    assert allowlist.env_policy.env == {"TERM", "MY_APP_MODE"}
    assert allowlist.env_policy.cwd == {"/", "/srv/app"}


def test_without_env_and_cwd_keys_nothing_is_permitted() -> None:
    policy = Allowlist.from_mapping({"allow": ["uptime"]}).env_policy
    assert policy.env == frozenset()
    assert policy.cwd == {"/"}
    assert Allowlist.deny_all().env_policy == EnvPolicy()
    assert Allowlist.local_allow_all().env_policy == EnvPolicy()


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "GIT_CONFIG_COUNT", "GIT_CONFIG_PARAMETERS", "PYTHONSTARTUP", "NODE_OPTIONS", "PATH"]
)
def test_a_policy_listing_a_dangerous_name_does_not_load(name: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        Allowlist.from_mapping({"allow": ["uptime"], "env": ["TERM", name]})
    assert f"env[1] {name}: it controls what gets loaded or executed, so no policy can permit it" in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"env": "TERM"}, "'env' must be a list of variable names"),
        ({"env": [1]}, "env[0] must be a variable name"),
        ({"env": ["MY_*"]}, "env[0] 'MY_*': patterns are not accepted"),
        ({"env": ["A-B"]}, "env[0] 'A-B' is not a plain NAME"),
        ({"cwd": "/srv"}, "'cwd' must be a list of absolute directories"),
        ({"cwd": ["srv/app"]}, "cwd[0] 'srv/app' must be an absolute, normalised directory"),
        ({"cwd": ["/srv/app/"]}, "cwd[0] '/srv/app/' must be an absolute, normalised directory"),
        ({"cwd": ["/srv/../tmp"]}, "cwd[0] '/srv/../tmp' must be an absolute, normalised directory"),
    ],
)
def test_bad_env_or_cwd_entries_are_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyFileError, match=message.replace("*", r"\*").replace("[", r"\[").replace("]", r"\]")):
        Allowlist.from_mapping({"allow": ["uptime"], **data})


def test_digest_is_unchanged_without_env_and_changes_with_it() -> None:
    plain = Allowlist.from_mapping({"allow": ["uptime"]}).digest()
    assert Allowlist.from_mapping({"allow": ["uptime"], "env": [], "cwd": ["/"]}).digest() == plain
    assert Allowlist.from_mapping({"allow": ["uptime"], "env": ["TERM"]}).digest() != plain
    assert Allowlist.from_mapping({"allow": ["uptime"], "cwd": ["/srv"]}).digest() != plain


# -- the agent installs its policy before it dials -----------------------------------------------------------


def _settings(tmp_path: Path, policy: dict[str, object]) -> AgentSettings:
    token = tmp_path / "token"
    token.write_text("tlo_ag_secret\n")
    token.chmod(0o600)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    return AgentSettings(
        server="http://127.0.0.1:9",
        name="web-1",
        token_file=token,
        policy_file=policy_file,
        state_dir=tmp_path / "state",
    )


def test_build_agent_installs_the_hosts_env_policy(tmp_path: Path) -> None:
    settings = _settings(tmp_path, {"allow": ["uptime"], "env": ["TERM"], "cwd": ["/srv/app"]})
    build_agent(settings)
    policy = installed_policy()
    assert policy is not None
    assert dataclasses.astuple(policy) == (frozenset({"TERM"}), frozenset({"/", "/srv/app"}), str(settings.policy_file))


def test_build_agent_without_a_policy_file_permits_no_variable(tmp_path: Path) -> None:
    settings = dataclasses.replace(_settings(tmp_path, {}), policy_file=None)
    build_agent(settings)
    assert installed_policy() == EnvPolicy()


def test_build_agent_refuses_a_policy_listing_ld_preload(tmp_path: Path) -> None:
    settings = _settings(tmp_path, {"allow": ["uptime"], "env": ["LD_PRELOAD"]})
    with pytest.raises(AgentSetupError, match="env\\[0\\] LD_PRELOAD: it controls what gets loaded or executed"):
        build_agent(settings)


def test_the_documented_policy_example_loads_with_its_env_and_cwd() -> None:
    """docs/install-agent.md's policy file, as shown, is one the agent accepts."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "install-agent.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(# /etc/teleops/agent-policy\.yaml\n.*?)```", text, re.S)
    assert found is not None, "docs/install-agent.md lost its policy file example"
    policy = Allowlist.from_mapping(yaml.safe_load(found.group(1))).env_policy
    assert policy.env == {"TERM"}
    assert policy.cwd == {"/", "/srv/app"}
