"""The process-count bound decision (agent/cgroup.py) and the cgroup v1 pids hierarchy lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teleops.agent import cgroup, runner
from teleops.agent.cgroup import (
    PIDS_CGROUP_V1,
    PIDS_CGROUP_V2,
    PIDS_NONE,
    PIDS_RLIMIT,
    CommandCgroup,
    decide_pids_bound,
    pids_v1_parent,
    runs_privileged,
)
from teleops.agent.runner import RunSpec, run

V2_NOTE = "cgroup v2 pids not enabled for /sys/fs/cgroup/unified"
V1_NOTE = "no cgroup v1 pids hierarchy"


@pytest.mark.parametrize("privileged", [True, False])
def test_cgroup_v2_pids_is_used_when_available(privileged: bool) -> None:
    decision = decide_pids_bound(v2=True, v1=True, privileged=privileged)
    assert decision.mechanism == PIDS_CGROUP_V2
    assert decision.refusal is None


@pytest.mark.parametrize("privileged", [True, False])
def test_cgroup_v1_pids_is_used_without_v2(privileged: bool) -> None:
    decision = decide_pids_bound(v2=False, v1=True, privileged=privileged)
    assert decision.mechanism == PIDS_CGROUP_V1
    assert decision.refusal is None


def test_neither_and_root_is_refused_saying_why() -> None:
    decision = decide_pids_bound(v2=False, v1=False, privileged=True, v2_note=V2_NOTE, v1_note=V1_NOTE)
    assert decision.mechanism == PIDS_NONE
    assert decision.refusal is not None
    assert decision.refusal.startswith("no process limit available for this command")
    assert V2_NOTE in decision.refusal
    assert V1_NOTE in decision.refusal
    assert "root" in decision.refusal
    assert "RLIMIT_NPROC does not apply" in decision.refusal
    assert "enable the pids controller" in decision.refusal
    assert "unprivileged" in decision.refusal


def test_neither_and_unprivileged_relies_on_rlimit_nproc() -> None:
    decision = decide_pids_bound(v2=False, v1=False, privileged=False, v2_note=V2_NOTE, v1_note=V1_NOTE)
    assert decision.mechanism == PIDS_RLIMIT
    assert decision.refusal is None


def test_run_as_uid_0_is_privileged_and_another_user_is_not() -> None:
    assert runs_privileged(0) is True
    other = 65534 if os.getuid() != 65534 else 65533
    assert runs_privileged(other) is False  # a root agent switching to it drops every capability


MOUNTINFO = """\
25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:28 / {root} rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
39 31 0:36 {mount_root} {root}/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd
"""


def _fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, mount_root: str, own: str, pids: bool = True) -> Path:
    root = tmp_path / "cgroup"
    info = MOUNTINFO.format(root=root, mount_root=mount_root)
    if not pids:
        info = "\n".join(line for line in info.splitlines() if ",pids" not in line) + "\n"
    (tmp_path / "mountinfo").write_text(info)
    (tmp_path / "self-cgroup").write_text(f"9:name=systemd:/\n8:pids:{own}\n4:memory:/x\n0::/\n")
    monkeypatch.setattr(cgroup, "_MOUNTINFO", tmp_path / "mountinfo")
    monkeypatch.setattr(cgroup, "_PROC_CGROUP", tmp_path / "self-cgroup")
    return root / "pids"


def test_v1_pids_parent_is_the_agents_own_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mount = _fake(tmp_path, monkeypatch, mount_root="/", own="/system.slice/teleops.service")
    group = mount / "system.slice" / "teleops.service"
    group.mkdir(parents=True)
    (group / "cgroup.procs").write_text("")
    assert pids_v1_parent() == group


def test_v1_pids_parent_under_a_mount_of_part_of_the_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mount = _fake(tmp_path, monkeypatch, mount_root="/docker/abc", own="/docker/abc/agent")
    (mount / "agent").mkdir(parents=True)
    (mount / "agent" / "cgroup.procs").write_text("")
    assert pids_v1_parent() == mount / "agent"


def test_no_v1_pids_parent_without_the_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, monkeypatch, mount_root="/", own="/", pids=False)
    assert pids_v1_parent() is None


def test_no_v1_pids_parent_when_our_group_is_not_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, monkeypatch, mount_root="/", own="/gone")  # directory missing
    assert pids_v1_parent() is None


async def test_runner_refuses_a_root_command_nothing_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "runs_privileged", lambda uid: True)
    monkeypatch.setattr(CommandCgroup, "create", classmethod(lambda cls, *a, **k: None))
    result = await run(RunSpec(["echo", "ran-anyway"], timeout_s=5.0))
    assert result.exit_code == 126
    assert result.isolation == runner.ISOLATION_NONE
    assert result.error is not None
    assert result.error.startswith("no process limit available for this command")
    assert b"ran-anyway" not in result.output


async def test_runner_runs_an_unprivileged_command_without_cgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "runs_privileged", lambda uid: False)
    monkeypatch.setattr(CommandCgroup, "create", classmethod(lambda cls, *a, **k: None))
    result = await run(RunSpec(["echo", "hi"], timeout_s=5.0))
    assert result.exit_code == 0
    assert result.output == b"hi\n"
    assert result.isolation == runner.ISOLATION_PROCESS_GROUP
