"""One cgroup v2 per command, so that descendants which left the process group (``setsid``) are killed too.

Where it works: the cgroup2 hierarchy is mounted (``/sys/fs/cgroup`` on unified hosts, ``/sys/fs/cgroup/unified``
on hybrid ones) and the agent may create a child of its own cgroup — as root, or as a service with systemd
``Delegate=yes``. The command's cgroup ``teleops-cmd-<id>`` is created under the agent's cgroup; the child is
moved into it while it waits at the spawn gate (see ``spawn``), so everything it forks is born inside. Killing uses
``cgroup.kill`` (Linux 5.14+), else SIGKILL to every pid in ``cgroup.procs`` until it is empty.

Fallback when the agent cannot create cgroups: process group only. The runner then signals the command's
process group, which misses any descendant that called ``setsid``/``setpgid``; such an escapee survives the
timeout, and the runner only guarantees that it stops reading its output (bounded drain) and returns on time.

Process-count bound (``pids.max``): RLIMIT_NPROC does not bind a command that runs as root, so a command's
cgroup carries the bound. When the pids controller is enabled for the agent's v2 subtree, ``pids.max`` of the
v2 cgroup holds it (as before). Otherwise, when a cgroup v1 ``pids`` hierarchy is mounted (hybrid hosts), a group
of the same name is made beside it, ``<pids mount>/<agent's v1 pids cgroup>/teleops-cmd-<id>``; the child joins
it at the same point as the v2 one (before it may exec), and leftovers in it are SIGKILLed before it is removed.
That v1 group only bounds the count: killing the tree stays the v2 cgroup's (or the process group's) job.
``decide_pids_bound`` says which mechanism bounds a command, or why it must be refused (no cgroup bound and the
command would run as root); ``announce_pids_bound`` logs it once at agent start (``agent.pids_bound``).
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
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = [
    "PIDS_CGROUP_V1",
    "PIDS_CGROUP_V2",
    "PIDS_NONE",
    "PIDS_RLIMIT",
    "CommandCgroup",
    "PidsBound",
    "PidsBoundError",
    "announce_pids_bound",
    "cgroup_parent",
    "decide_pids_bound",
    "missing_pids_notes",
    "pids_v1_parent",
    "runs_privileged",
]

log = logging.getLogger(__name__)
event_log = structlog.get_logger("teleops.agent.cgroup")

PIDS_CGROUP_V2 = "cgroup-v2"  # pids.max of the command's cgroup v2
PIDS_CGROUP_V1 = "cgroup-v1"  # pids.max of its group in the cgroup v1 pids hierarchy
PIDS_RLIMIT = "rlimit"  # only RLIMIT_NPROC: enough for an unprivileged command
PIDS_NONE = "none"  # nothing bounds it: a command that would run as root is refused

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


def _cgroup_v1_pids_mount() -> tuple[Path, str] | None:
    """Mount point and root of the cgroup v1 hierarchy that has the pids controller, None when none is mounted."""
    try:
        lines = _MOUNTINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = right.split(" ")
        if len(fields) >= 3 and fields[0] == "cgroup" and "pids" in fields[2].split(","):
            mount = left.split(" ")
            return Path(mount[4]), mount[3]
    return None


def pids_v1_parent() -> Path | None:
    """The agent's own cgroup in the v1 pids hierarchy (under which command groups are made); None without one."""
    found = _cgroup_v1_pids_mount()
    if found is None:
        return None
    mount, root = found
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "pids" not in controllers.split(","):
            continue
        if root != "/":  # the mount shows only part of the hierarchy
            if path != root and not path.startswith(root.rstrip("/") + "/"):
                return None
            path = path[len(root) :]
        group = mount / path.lstrip("/")
        return group if (group / "cgroup.procs").exists() else None
    return None


def _make_group(parent: Path, name: str) -> Path | None:
    """mkdir ``teleops-cmd-<name>`` under parent (a fresh name if it exists); None (debug log) when it cannot."""
    path = parent / f"teleops-cmd-{name}"
    try:
        try:
            path.mkdir()
        except FileExistsError:  # a leftover or a duplicate id: never share a cgroup between commands
            path = parent / f"teleops-cmd-{name}-{uuid.uuid4().hex[:8]}"
            path.mkdir()
    except OSError as exc:
        log.debug("cannot create cgroup under %s (%s)", parent, exc)
        return None
    return path


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove cgroup %s: %s; remove it by hand once empty", path, exc)


def _procs(path: Path) -> list[int]:
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _v1_populated(path: Path) -> bool:
    try:  # a cheap counter first; it also counts zombies not yet reaped, so confirm with the member list
        if (path / "pids.current").read_text().strip() == "0":
            return False
    except OSError:
        pass
    return bool(_procs(path))


def _kill_listed(path: Path) -> None:
    """SIGKILL every process listed in the group until it is empty (at most 1 s): v1 has no cgroup.kill."""
    deadline = time.monotonic() + 1.0
    while (pids := _procs(path)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class PidsBoundError(Exception):
    """The command's process-count bound could not be put in place and it would run as root: it must not run."""


@dataclass(frozen=True, slots=True)
class PidsBound:
    """What bounds a command's number of processes: ``mechanism`` is one of PIDS_*; ``refusal`` (for a person) is
    set when nothing does and the command would run privileged, i.e. it must not run."""

    mechanism: str
    refusal: str | None = None


def decide_pids_bound(
    *,
    v2: bool,
    v1: bool,
    privileged: bool,
    v2_note: str = "cgroup v2 pids not enabled",
    v1_note: str = "no cgroup v1 pids hierarchy",
) -> PidsBound:
    """The bound a command gets: the v2 pids controller, else the v1 pids hierarchy, else RLIMIT_NPROC, which the
    kernel enforces only for a process that is not root (real uid 0, or CAP_SYS_RESOURCE/CAP_SYS_ADMIN): such a
    command is refused. The notes say why v2 and v1 are unavailable; they go into the refusal."""
    if v2:
        return PidsBound(PIDS_CGROUP_V2)
    if v1:
        return PidsBound(PIDS_CGROUP_V1)
    if not privileged:
        return PidsBound(PIDS_RLIMIT)
    return PidsBound(
        PIDS_NONE,
        "no process limit available for this command: the cgroup pids controller is not available "
        f"({v2_note}; {v1_note}) and it would run as root, where RLIMIT_NPROC does not apply; enable the pids "
        "controller (in the agent's cgroup v2 cgroup.subtree_control, or mount the cgroup v1 pids hierarchy) or "
        "run the agent or the command (run_as) as an unprivileged user",
    )


_CAP_SYS_ADMIN = 21
_CAP_SYS_RESOURCE = 24


def runs_privileged(uid: int | None) -> bool:
    """Whether a command would be exempt from RLIMIT_NPROC: it runs as ``uid`` (None: as the agent) and the kernel
    skips the check for real uid 0 and for CAP_SYS_RESOURCE or CAP_SYS_ADMIN. A root agent switching to another
    uid drops every capability; a non-root agent's command keeps only its ambient capabilities across exec."""
    if uid is not None and uid != os.getuid():
        return uid == 0
    if os.getuid() == 0 or os.geteuid() == 0:
        return True
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapAmb:"):
            ambient = int(line.split()[1], 16)
            return bool(ambient & ((1 << _CAP_SYS_ADMIN) | (1 << _CAP_SYS_RESOURCE)))
    return False


def missing_pids_notes(*, isolate: bool = True) -> tuple[str, str]:
    """Why neither cgroup version can bound a command here (v2 note, v1 note), for a refusal."""
    parent = cgroup_parent()
    if parent is None:
        v2_note = "no cgroup v2 hierarchy the agent can use"
    elif not isolate:
        v2_note = f"cgroup v2 pids not enabled for {parent} (and the command's cgroup v2 is turned off)"
    else:
        v2_note = f"cgroup v2 pids not enabled for {parent}"
    v1_parent = pids_v1_parent()
    if v1_parent is None:
        v1_note = "no cgroup v1 pids hierarchy"
    else:
        v1_note = f"cannot create a group with pids.max under the cgroup v1 pids hierarchy at {v1_parent}"
    return v2_note, v1_note


def announce_pids_bound() -> PidsBound:
    """Decide once, at agent start, how commands run as the agent are bounded, and log it (``agent.pids_bound``):
    a probe group is made and removed. Commands are still decided one by one (``run_as`` changes the answer)."""
    probe = CommandCgroup.create(f"probe-{os.getpid()}-{uuid.uuid4().hex[:8]}", pids_max=1)
    mechanism = probe.pids_mechanism if probe is not None else None
    if probe is not None:
        probe.remove()
    notes = missing_pids_notes() if mechanism is None else ("", "")
    decision = decide_pids_bound(
        v2=mechanism == PIDS_CGROUP_V2,
        v1=mechanism == PIDS_CGROUP_V1,
        privileged=runs_privileged(None),
        v2_note=notes[0],
        v1_note=notes[1],
    )
    if decision.refusal is None:
        event_log.info("agent.pids_bound", mechanism=decision.mechanism)
    else:
        event_log.warning(
            "agent.pids_bound",
            mechanism=decision.mechanism,
            consequence="commands that would run as root are refused",
            reason=decision.refusal,
        )
    return decision


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
    """A cgroup holding one command and all its descendants. Create with ``create``; always ``remove`` it.

    ``path`` is the command's cgroup v2 directory, or, for a group made only to bound the process count
    (``v2=False``), its group in the cgroup v1 pids hierarchy. ``pids_v1`` is that v1 group (beside the v2 one when
    the v2 subtree has no pids controller). ``isolates``: the runner kills the command's tree through ``path``."""

    def __init__(self, path: Path, *, v2: bool = True, isolates: bool = True, pids_v1: Path | None = None) -> None:
        self.path = path
        self.v2 = v2
        self.isolates = isolates and v2
        self.pids_v1 = pids_v1 if v2 else path
        self.pids_mechanism: str | None = None  # PIDS_CGROUP_V2 / _V1 once pids.max is written
        self.require_pids_bound = False  # set by the runner for a root command: a failed join then refuses it
        self._joined_v2 = False  # add() moved the process into path (a v2 cgroup)
        self._joined_v1 = False  # ... into pids_v1

    @classmethod
    def create(
        cls, command_id: str | None, *, pids_max: int | None = None, isolate: bool = True
    ) -> CommandCgroup | None:
        """Make ``teleops-cmd-<id>`` under the agent's cgroup v2 and, when that has no pids controller, in the v1
        pids hierarchy; None (and a debug log) when neither is possible. ``isolate=False``: only the process-count
        bound is wanted (the runner's process-group fallback), no v2 cgroup is made unless it carries pids.max."""
        name = command_id if command_id is not None and _SAFE_ID.fullmatch(command_id) else uuid.uuid4().hex
        parent = cgroup_parent()
        v2_path = _make_group(parent, name) if parent is not None else None
        if v2_path is None and parent is not None:
            log.debug("cgroup isolation unavailable; falling back to the process group")
        v2_pids = v2_path is not None and (v2_path / "pids.max").exists()
        if v2_path is not None and not isolate and not v2_pids:
            _rmdir(v2_path)
            v2_path = None
        v1_path = None
        if not v2_pids:
            v1_parent = pids_v1_parent()
            v1_path = _make_group(v1_parent, name) if v1_parent is not None else None
        if v2_path is not None:
            group = cls(v2_path, isolates=isolate, pids_v1=v1_path)
        elif v1_path is not None:
            group = cls(v1_path, v2=False)
        else:
            return None
        if pids_max is not None:
            group._set_pids_max(pids_max)
        return group

    @property
    def bounded(self) -> bool:
        """pids.max is set and the command's process (``add``) is inside the group that carries it."""
        if self.pids_mechanism == PIDS_CGROUP_V2:
            return self._joined_v2
        return self.pids_mechanism == PIDS_CGROUP_V1 and self._joined_v1

    def _set_pids_max(self, limit: int) -> None:
        # v2: only present when the pids controller is enabled for our subtree. Unlike RLIMIT_NPROC it binds root.
        if self.v2 and (self.path / "pids.max").exists():
            pids_max, mechanism = self.path / "pids.max", PIDS_CGROUP_V2
        elif self.pids_v1 is not None:
            pids_max, mechanism = self.pids_v1 / "pids.max", PIDS_CGROUP_V1
        else:
            return
        try:
            pids_max.write_text(str(limit))
        except OSError as exc:
            log.warning("cannot set %s: %s", pids_max, exc)
            return
        self.pids_mechanism = mechanism

    def add(self, pid: int) -> None:
        """Move a process (not yet running the command, see ``spawn``) into this cgroup (and its v1 pids group);
        raises OSError, or PidsBoundError when the group carrying pids.max refused it and ``require_pids_bound``."""
        if self.v2 and self.pids_v1 is not None:  # the bound first: the v2 move may fail and fall back
            try:
                (self.pids_v1 / "cgroup.procs").write_text(str(pid))
                self._joined_v1 = True
            except OSError as exc:
                if self.require_pids_bound:
                    raise PidsBoundError(self._join_failed(self.pids_v1, exc)) from exc
                log.warning("cannot move pid %s into %s (%s); RLIMIT_NPROC only", pid, self.pids_v1, exc)
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            if self.require_pids_bound and not self.bounded:
                raise PidsBoundError(self._join_failed(self.path, exc)) from exc
            raise
        if self.v2:
            self._joined_v2 = True
        else:
            self._joined_v1 = True

    @staticmethod
    def _join_failed(path: Path, exc: OSError) -> str:
        return (
            f"no process limit for this command: cannot move it into {path} ({exc.strerror or exc}), and it would "
            "run as root, where RLIMIT_NPROC does not apply; check the agent's cgroup permissions"
        )

    def pids(self) -> list[int]:
        return _procs(self.path)

    def populated(self) -> bool:
        if not self.v2:
            return _v1_populated(self.path)
        try:
            text = (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            populated = False
        except OSError:
            populated = bool(self.pids())
        else:
            populated = "populated 1" in text
        return populated or (self.pids_v1 is not None and _v1_populated(self.pids_v1))

    def signal_all(self, sig: int) -> None:
        """Send sig to every process in the cgroup (SIGTERM phase; ignores ones that are already gone)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL everything in the cgroup, including processes forked while we do it.

        Nothing is written when the cgroup is already empty: a write to a cgroup file takes the kernel's
        cgroup_mutex, which a process move elsewhere (another command's process being placed, agent/spawn.py)
        holds through an RCU grace period, so a needless cgroup.kill would hold a finished command's result for
        5-20 ms."""
        if self.v2:
            self._kill_v2()
        if self.pids_v1 is not None and _v1_populated(self.pids_v1):
            _kill_listed(self.pids_v1)

    def _kill_v2(self) -> None:
        try:
            if "populated 1" not in (self.path / "cgroup.events").read_text():
                return
        except FileNotFoundError:
            return
        except OSError:
            if not self.pids():
                return
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except FileNotFoundError:
            pass  # kernel before 5.14
        except OSError as exc:
            log.warning("cgroup.kill failed on %s: %s; killing pid by pid", self.path, exc)
        _kill_listed(self.path)

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
        """rmdir the cgroup (and its v1 pids group); logs (does not raise) when one is still busy."""
        if self.v2:
            _rmdir(self.path)
        if self.pids_v1 is not None:
            _rmdir(self.pids_v1)
