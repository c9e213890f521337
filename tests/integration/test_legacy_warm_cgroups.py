"""Agents before docs/adr/0010-no-warm-spawn.md kept processes started ahead of time in cgroups named
`teleops-cmd-warm-<agent pid>-<random>`. This agent makes none, but its start (`reap_orphans`) still kills and removes
those whose agent is gone, so an upgrade over an agent that was killed leaves nothing behind; a live agent's groups
and ordinary command groups are left alone. Real cgroups and a real process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from teleops.agent.cgroup import CommandCgroup
from teleops.agent.orphans import reap_orphans
from teleops.agent.spool import Spool


def _gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_start_removes_the_warm_cgroups_of_a_gone_older_agent_and_no_other(tmp_path: Path) -> None:
    probe = CommandCgroup.create(None)
    if probe is None:  # no cgroups to leave behind here: the sweep must simply not fail
        assert reap_orphans(Spool(tmp_path / "state"), running=()) == []
        return
    probe.remove()
    gone = _gone_pid()
    empty = CommandCgroup.create(f"warm-{gone}-deadbeef0000")  # its trampoline read EOF and exited
    held = CommandCgroup.create(f"warm-{gone}-deadbeef0001")  # a command taken from it still runs
    live = CommandCgroup.create(f"warm-{os.getpid()}-live00000000")  # an agent still running
    command = CommandCgroup.create(str(gone))  # an ordinary command's group: only its marker file names it
    groups = [group for group in (empty, held, live, command) if group is not None]
    assert empty is not None
    assert held is not None
    assert live is not None
    assert command is not None
    leftover = subprocess.Popen(["sleep", "300"])
    try:
        held.add(leftover.pid)
        reported = reap_orphans(Spool(tmp_path / "state"), running=())
        assert leftover.wait(timeout=5) == -9  # SIGKILLed with its group
        assert reported == []  # no marker: nothing to report to the controller
        assert not empty.path.exists()
        assert not held.path.exists()
        assert live.path.exists()
        assert command.path.exists()
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
        for group in groups:
            group.remove()
