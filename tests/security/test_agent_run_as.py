"""Who a command runs as (docs/threat-model.md T33, issue #16.5), checked by the child's own `id`, end to end: a real
`teleops agent` process with a policy file, driven over the wire protocol by a controller double.

A root agent runs a command as the run_as of the rule that allowed it, else as the policy's run_as (default
nobody); root only where a rule names it. Every command starts cold (docs/adr/0010-no-warm-spawn.md): the agent
forks a trampoline as itself, sets its cgroup and limits from outside, and switches user at the exec (setpriv, or a
preexec_fn where setpriv is missing); both switches are covered below.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.security.test_agent_environment import attacked_agent

from teleops.agent import spawn
from teleops.agent.runner import RunSpec, run
from teleops.wire import Exec, Exit, Refused


def _uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def _exit(answer: Exit | Refused) -> Exit:
    assert isinstance(answer, Exit), f"refused: {getattr(answer, 'reason', '')}"
    return answer


def test_the_suite_runs_as_root() -> None:
    # The run_as switch needs a root agent; CI runs the suite as root. Fail loudly rather than skip elsewhere.
    assert os.geteuid() == 0, "these tests need root (the CI machine runs the suite as root)"


async def test_plain_rules_run_unprivileged_and_root_only_where_a_rule_names_it(tmp_path: Path) -> None:
    policy = {
        "allow": [
            "id -u",
            "id -G",
            {"command": "id -un", "run_as": "root"},
            {"command": "id -g", "run_as": "daemon"},
            "cat /etc/shadow",
            "cat /proc/self/status",
        ]
    }
    async with attacked_agent(tmp_path, policy) as (controller, _agent):
        for number in range(3):  # the same answer every time, not only for the first command
            plain = _exit(await controller.execute(Exec(command_id=f"u-{number}", argv=["id", "-u"], timeout_s=30)))
            assert plain.exit_code == 0, plain.output
            assert plain.output.strip() == str(_uid("nobody"))
        groups = _exit(await controller.execute(Exec(command_id="g-1", argv=["id", "-G"], timeout_s=30)))
        assert groups.output.split() == [str(g) for g in sorted({pwd.getpwnam("nobody").pw_gid})]  # not root's
        root = _exit(await controller.execute(Exec(command_id="r-1", argv=["id", "-un"], timeout_s=30)))
        assert root.output.strip() == "root"
        daemon = _exit(await controller.execute(Exec(command_id="d-1", argv=["id", "-g"], timeout_s=30)))
        assert daemon.output.strip() == str(pwd.getpwnam("daemon").pw_gid)
        status = _exit(
            await controller.execute(Exec(command_id="c-1", argv=["cat", "/proc/self/status"], timeout_s=30))
        )
        fields = dict(line.split(":", 1) for line in status.output.splitlines() if ":" in line)
        for capabilities in ("CapEff", "CapPrm", "CapInh", "CapAmb"):  # the uid drop cleared every capability
            assert int(fields[capabilities].strip(), 16) == 0, (capabilities, fields[capabilities])
        assert fields["Uid"].split() == [str(_uid("nobody"))] * 4  # real, effective, saved, filesystem
        shadow = _exit(await controller.execute(Exec(command_id="s-1", argv=["cat", "/etc/shadow"], timeout_s=30)))
        assert shadow.exit_code != 0
        assert "Permission denied" in shadow.output


async def test_the_policy_run_as_names_who_plain_rules_run_as(tmp_path: Path) -> None:
    async with attacked_agent(tmp_path, {"run_as": "daemon", "allow": ["id -u"]}) as (controller, agent):
        for number in range(2):
            answer = _exit(await controller.execute(Exec(command_id=f"u-{number}", argv=["id", "-u"], timeout_s=30)))
            assert answer.output.strip() == str(_uid("daemon"))
    started = agent.lines("agent.command_started")
    assert {line["run_as"] for line in started} == {"daemon"}  # the agent's own log says who ran it


async def test_a_command_of_another_user_still_gets_its_cpu_limit(tmp_path: Path) -> None:
    # The limits are set from outside on a process of the agent's own user, then survive the switch to nobody.
    policy = {"allow": ["cat /proc/self/limits"]}
    async with attacked_agent(tmp_path, policy) as (controller, _agent):
        for number in range(2):
            exec_ = Exec(command_id=f"l-{number}", argv=["cat", "/proc/self/limits"], timeout_s=7)
            limits = _exit(await controller.execute(exec_)).output
            cpu = next(line for line in limits.splitlines() if line.startswith("Max cpu time")).split()
            processes = next(line for line in limits.splitlines() if line.startswith("Max processes")).split()
            assert cpu[3:5] == ["10", "11"]  # timeout 7 s + 3 s grace, then the hard limit a second later
            assert processes[2:4] == ["256", "256"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"run_as": "root", "allow": ["id"]}, "name root only on the rules that need it"),
        ({"allow": [{"command": "id", "run_as": "no-such-user-teleops"}]}, "no such user on this host"),
        ({"run_as": "no-such-user-teleops", "allow": ["id"]}, "no such user on this host"),
        ({"allow": [{"command": "id", "run_as": "root", "sudo": True}]}, "unknown key(s) sudo"),
    ],
)
def test_a_policy_naming_root_at_the_top_or_an_unknown_user_stops_the_agent(
    tmp_path: Path, policy: dict[str, object], expected: str
) -> None:
    token = tmp_path / "token"
    token.write_text("tlo_ag_unused\n")
    token.chmod(0o600)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    argv = [sys.executable, "-m", "teleops", "agent", "--server", "http://127.0.0.1:9", "--name", "web-1"]
    argv += ["--token-file", str(token), "--policy", str(policy_file), "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 78, done.stderr
    assert expected in done.stderr


@pytest.mark.parametrize("setpriv", [True, False], ids=["setpriv", "preexec-fallback"])
async def test_a_start_as_another_user_gets_its_limits_and_no_capabilities(
    setpriv: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A start switches users with util-linux's setpriv, or in a preexec_fn where it is missing: both must give the
    # same child.
    if not setpriv:
        monkeypatch.setattr(spawn, "_SETPRIV_PATHS", ())
    spawn._setpriv.cache_clear()
    try:
        script = (
            "id -u; id -G; grep -E '^(Max cpu time|Max processes)' /proc/self/limits; grep ^CapEff /proc/self/status"
        )
        result = await run(
            RunSpec(argv=["sh", "-c", script], run_as="nobody", timeout_s=7, command_id=f"cold-{setpriv}")
        )
    finally:
        spawn._setpriv.cache_clear()
    assert result.exit_code == 0, result.output
    lines = result.output.decode().splitlines()
    assert lines[0] == str(_uid("nobody"))
    assert lines[1] == str(pwd.getpwnam("nobody").pw_gid)
    assert lines[2].split()[3:5] == ["10", "11"]
    assert lines[3].split()[2:4] == ["256", "256"]
    assert int(lines[4].split()[1], 16) == 0
