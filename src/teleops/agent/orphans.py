"""Commands a previous run of this agent left running: found at start and killed (docs/threat-model.md F08, F11).

An agent killed with SIGKILL (or by the OOM killer) cannot kill its commands, and nothing else enforces their
timeouts. So while a command runs, the agent keeps a marker `<state dir>/running/<command id>` listing its
cgroup directories (written once the process is in them, removed when it ends). At the next start each marker
left behind names a command of the dead run: its cgroups are killed and removed, and a result goes to the spool
(exit 137, signal 9, saying why), so the controller records `killed` instead of `lost`.

Agents before docs/adr/0010-no-warm-spawn.md kept processes started ahead of time in cgroups named
`teleops-cmd-warm-<agent pid>-…`; one killed before it could clean up left them behind. This agent makes none,
but at start it still kills and removes those whose agent is gone, so an upgrade leaves nothing behind.

Without cgroups (no delegation, not root) there is nothing to find: under systemd the unit's KillMode kills
them with the agent (deploy/teleops-agent.service); run by hand, they outlive it (docs/agent-runner.md).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import structlog

from teleops.agent.cgroup import CommandCgroup, cgroup_parent, pids_v1_parent
from teleops.agent.spool import Spool
from teleops.wire import Exit

__all__ = ["KILLED_AT_RESTART", "mark_running", "reap_orphans", "unmark_running"]

log = structlog.get_logger(__name__)

KILLED_AT_RESTART = (
    "[teleops agent: the agent stopped while this command ran (killed, or restarted by the host); at its next "
    "start it found the command still running and killed it]\n"
)
_RUNNING = "running"
_LEGACY_WARM_PREFIX = "teleops-cmd-warm-"  # made only by agents before ADR 0010; swept at start


def mark_running(state_dir: Path, command_id: str, cgroups: Sequence[Path]) -> None:
    """Note where a running command's processes are (no fsync: after a power cut they are gone anyway)."""
    folder = state_dir / _RUNNING
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        (folder / command_id).write_text("".join(f"{path}\n" for path in cgroups))
    except OSError as exc:
        log.warning("agent.running_marker_failed", command_id=command_id, error=str(exc))


def unmark_running(state_dir: Path, command_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / _RUNNING / command_id).unlink()


def reap_orphans(spool: Spool, running: Collection[str]) -> list[str]:
    """Kill and remove what an earlier run of this agent left running; returns the command ids it reported."""
    reported: list[str] = []
    folder = spool.directory / _RUNNING
    for marker in sorted(folder.glob("*")) if folder.is_dir() else []:
        command_id = marker.name
        if command_id in running:
            continue
        held = False
        for line in marker.read_text(errors="replace").splitlines():
            path = Path(line)
            if line and _is_ours(path) and _kill(path):
                held = True
        if held:
            spool.put(Exit(command_id=command_id, exit_code=137, signal=9, output=KILLED_AT_RESTART))
            reported.append(command_id)
            log.warning("agent.orphan_killed", command_id=command_id)
        marker.unlink(missing_ok=True)
    for parent in (cgroup_parent(), pids_v1_parent()):
        for path in sorted(parent.glob(f"{_LEGACY_WARM_PREFIX}*")) if parent is not None else []:
            owner = path.name.removeprefix(_LEGACY_WARM_PREFIX).split("-", 1)[0]
            if owner.isdigit() and not _alive(int(owner)) and _kill(path):
                log.warning(
                    "agent.orphan_killed", cgroup=str(path), reason="a warm trampoline left by an older agent now gone"
                )
    return reported


def _is_ours(path: Path) -> bool:
    """Only a `teleops-cmd-…` directory under /sys/fs/cgroup: the marker file is never trusted further."""
    return (
        path.is_absolute()
        and path.name.startswith("teleops-cmd-")
        and ".." not in path.parts
        and (path.parts[:4] == ("/", "sys", "fs", "cgroup"))
    )


def _kill(path: Path) -> bool:
    """SIGKILL what is in the group, wait up to a second for it to empty, rmdir it; True when it held anything."""
    if not path.is_dir():
        return False
    group = CommandCgroup(path, v2=(path / "cgroup.events").exists())
    if not group.populated():
        group.remove()
        return False
    group.kill()
    deadline = time.monotonic() + 1.0
    while group.populated() and time.monotonic() < deadline:
        time.sleep(0.01)
    group.remove()
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
