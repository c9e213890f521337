"""One cgroup v2 per command, so that descendants which left the process group (``setsid``) are killed too.

Where it works: the cgroup2 hierarchy is mounted (``/sys/fs/cgroup`` on unified hosts, ``/sys/fs/cgroup/unified``
on hybrid ones) and the agent may create a child of its own cgroup — as root, or as a service with systemd
``Delegate=yes``. The command's cgroup ``teleops-cmd-<id>`` is created under the agent's cgroup; the child is
moved into it while it waits at the spawn gate (see ``spawn``), so everything it forks is born inside. Killing uses
``cgroup.kill`` (Linux 5.14+), else SIGKILL to every pid in ``cgroup.procs`` until it is empty.

Fallback when the agent cannot create cgroups: process group only. The runner then signals the command's
process group, which misses any descendant that called ``setsid``/``setpgid``; such an escapee survives the
timeout, and the runner only guarantees that it stops reading its output (bounded drain) and returns on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
import uuid
from pathlib import Path

__all__ = ["CommandCgroup", "cgroup_parent"]

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PROC_CGROUP = Path("/proc/self/cgroup")
_MOUNTINFO = Path("/proc/self/mountinfo")


def _cgroup2_mount() -> Path | None:
    try:
        lines = _MOUNTINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        # "<id> <parent> <maj:min> <root> <mount point> <opts> ... - <fstype> <source> <super opts>"
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4])
    return None


def cgroup_parent() -> Path | None:
    """The agent's own cgroup v2 directory, under which command cgroups are created; None without cgroup v2."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = mount / line[3:].lstrip("/")
            return path if (path / "cgroup.procs").exists() else None
    return None


class CommandCgroup:
    """A cgroup holding one command and all its descendants. Create with ``create``; always ``remove`` it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pids_max: int | None = None

    @classmethod
    def create(cls, command_id: str | None, *, pids_max: int | None = None) -> CommandCgroup | None:
        """Make ``teleops-cmd-<id>`` under the agent's cgroup; None (and a debug log) when that is not possible."""
        parent = cgroup_parent()
        if parent is None:
            return None
        name = command_id if command_id is not None and _SAFE_ID.fullmatch(command_id) else uuid.uuid4().hex
        path = parent / f"teleops-cmd-{name}"
        try:
            try:
                path.mkdir()
            except FileExistsError:  # a leftover or a duplicate id: never share a cgroup between commands
                path = parent / f"teleops-cmd-{name}-{uuid.uuid4().hex[:8]}"
                path.mkdir()
        except OSError as exc:
            log.debug("cgroup isolation unavailable (%s); falling back to the process group", exc)
            return None
        group = cls(path)
        if pids_max is not None:
            group._set_pids_max(pids_max)
        return group

    def claim(self, *, pids_max: int | None = None) -> None:
        """Make a cgroup created ahead of time (``agent/warm.py``) a command's: its pids limit, written only when it
        differs from the one set at creation. It keeps its provisional name (``teleops-cmd-warm-…``): cgroup v2
        refuses to rename a cgroup."""
        if pids_max is not None and pids_max != self._pids_max:
            self._set_pids_max(pids_max)

    def _set_pids_max(self, limit: int) -> None:
        # Only present when the pids controller is enabled for our subtree; unlike RLIMIT_NPROC it binds root.
        pids_max = self.path / "pids.max"
        if pids_max.exists():
            try:
                pids_max.write_text(str(limit))
                self._pids_max = limit
            except OSError as exc:
                log.warning("cannot set %s: %s", pids_max, exc)

    def add(self, pid: int) -> None:
        """Move a process (not yet running the command, see ``spawn``) into this cgroup; raises OSError."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def populated(self) -> bool:
        try:
            text = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return bool(self.pids())
        return "populated 1" in text

    def signal_all(self, sig: int) -> None:
        """Send sig to every process in the cgroup (SIGTERM phase; ignores ones that are already gone)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL everything in the cgroup, including processes forked while we do it.

        Nothing is written when the cgroup is already empty: a write to a cgroup file takes the kernel's
        cgroup_mutex, which a process move elsewhere (a warm trampoline being placed, agent/warm.py) holds through
        an RCU grace period, so a needless cgroup.kill would hold a finished command's result for 5-20 ms."""
        if not self.populated():
            return
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except FileNotFoundError:
            pass  # kernel before 5.14
        except OSError as exc:
            log.warning("cgroup.kill failed on %s: %s; killing pid by pid", self.path, exc)
        deadline = time.monotonic() + 1.0
        while self.pids() and time.monotonic() < deadline:
            self.signal_all(signal.SIGKILL)

    async def wait_empty(self, timeout_s: float) -> bool:
        """Poll until no process is left (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def remove(self) -> None:
        """rmdir the cgroup; logs (does not raise) when it is still busy."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove cgroup %s: %s; remove it by hand once empty", self.path, exc)
