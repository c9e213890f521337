"""Starting a command held at a gate: configure it from outside (cgroup, rlimits), then let it exec.

Why a gate and not ``preexec_fn``: a preexec_fn makes ``subprocess`` use fork() instead of vfork(), and fork()
of the agent costs milliseconds (page tables are copied) where vfork costs a fraction of one — the spawn is
most of the round trip of a short command. So the child is started as a fixed two-step trampoline::

    /bin/sh -c 'read -r go || exit 125; unset PWD; exec "$@" </dev/null' teleops-run ARGV...

Its stdin is the gate pipe, and it blocks reading it (stdin, because sh redirections only take fds 0-9; PWD
is unset because sh exports it). Meanwhile the agent moves its pid into the command's cgroup and sets its
rlimits with prlimit(2); only then does it write to the gate, and the trampoline execs the argv in place (same
pid, session and process group). The argv reaches ``exec`` as positional parameters: no shell ever parses it.
If configuration fails the gate is closed unwritten and the trampoline exits 125 without running anything.

With ``run_as`` (a root agent switching users) the trampoline still starts as the agent, gets its cgroup and
limits from outside like any other, and then execs ``setpriv --reuid --regid --groups -- ARGV`` (util-linux),
which drops to the user and execs the command: no fork of the agent, and prlimit(2) acts on a process of the
agent's own user, which needs no CAP_SYS_RESOURCE. The limits survive both execs and the user switch; the
kernel clears every capability at the switch from root. Where setpriv is missing, the limits are set and the
user switched in the child by a ``preexec_fn`` instead (fork, not vfork: milliseconds per command in a large
agent); it makes only plain system calls (setrlimit, setgroups, setresgid, setresuid) on values computed in the
parent, because a preexec_fn runs between fork and exec where a lock held by another thread would never be freed.

The program is located in the parent first (the fixed PATH, or the path given), so "not found" (127) and
"not executable" (126) are reported cleanly instead of as shell messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import stat
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from teleops.agent.cgroup import CommandCgroup
from teleops.agent.environment import FIXED_PATH
from teleops.agent.identity import Identity
from teleops.agent.identity import become as become_user
from teleops.agent.rlimits import RlimitSetting

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "SpawnRefused",
    "Spawned",
    "locate_program",
    "spawn",
]

log = logging.getLogger(__name__)

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127
_TRAMPOLINE_SHELL = "/bin/sh"
_TRAMPOLINE_NAME = "teleops-run"  # $0 of the trampoline, shown by sh if the final exec fails after all


class SpawnRefused(Exception):
    """The command was not started; ``exit_code`` is 126 or 127 and the message is meant for a person."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Spawned:
    process: asyncio.subprocess.Process
    output_fd: int  # read end of the interleaved stdout+stderr pipe; the caller closes it
    cgroup: CommandCgroup | None  # the cgroup the process is in, None when only the process group holds it


_SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv, which switches user in the trampoline (see the module docstring); None: not here."""
    return next((path for path in _SETPRIV_PATHS if _executable_file(path)), None)


def _executable_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and os.access(path, os.X_OK)


def locate_program(program: str, cwd: str) -> str:
    """The path that ``exec`` will run for program, searched like execvp does with the fixed PATH.

    Raises SpawnRefused(127) when nothing is found and SpawnRefused(126) when what is found cannot be executed.
    """
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            raise SpawnRefused(EXIT_NOT_FOUND, f"command not found: {program!r} does not exist on this host")
        if not _executable_file(path):
            raise SpawnRefused(
                EXIT_CANNOT_EXECUTE, f"permission denied: cannot execute {program!r}; it is not an executable file"
            )
        return path
    denied = None
    for directory in FIXED_PATH.split(":"):
        path = os.path.join(directory, program)
        if _executable_file(path):
            return path
        if os.path.exists(path) and denied is None:
            denied = path
    if denied is not None:
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, f"permission denied: cannot execute {denied!r}; check its mode")
    raise SpawnRefused(
        EXIT_NOT_FOUND, f"command not found: {program!r} (searched PATH={FIXED_PATH}); check the spelling or install it"
    )


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: dict[str, str],
    identity: Identity | None,
    limits: Sequence[RlimitSetting],
    cgroup: CommandCgroup | None,
    ready: Awaitable[None] | None = None,
) -> Spawned:
    """Start argv in a new session, stdin on /dev/null, stdout+stderr into one pipe, inside cgroup, with limits.

    `ready`, when given, is awaited before the gate opens: the command execs only once it completed (the agent
    writes the command id to disk meanwhile, so the fsync overlaps the fork). If it raises OSError the command
    never runs (SpawnRefused 126).

    Raises SpawnRefused when it could not be started (the command never ran). A cgroup that the process cannot
    join is given up (logged) and the command runs with process-group isolation only; the caller then owns
    removing that cgroup.
    """
    locate_program(argv[0], cwd)
    become = None
    dropped: list[str] = []
    if identity is not None and identity.switch:
        setpriv = _setpriv()
        if setpriv is not None:
            groups = ",".join(str(g) for g in identity.groups or (identity.gid,))
            dropped = [setpriv, f"--reuid={identity.uid}", f"--regid={identity.gid}", f"--groups={groups}", "--"]
        else:
            become = become_user(identity, limits)
    parent_limits = () if become is not None else tuple(limits)
    out_r, out_w = os.pipe()
    gate_r, gate_w = os.pipe()
    script = 'read -r go || exit 125; unset PWD; exec "$@" </dev/null'
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                _TRAMPOLINE_SHELL,
                "-c",
                script,
                _TRAMPOLINE_NAME,
                *dropped,
                *argv,
                stdin=gate_r,  # the command itself gets /dev/null from the trampoline
                stdout=out_w,
                stderr=out_w,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=become,
            )
        finally:
            os.close(out_w)
            os.close(gate_r)
    except BaseException as exc:
        os.close(out_r)
        os.close(gate_w)
        raise _refusal(exc, cwd) from exc

    joined = cgroup

    def join_cgroup() -> None:
        nonlocal joined
        if cgroup is None:
            return
        try:
            cgroup.add(process.pid)
        except OSError as exc:
            log.warning(
                "cannot move pid %s into %s (%s); isolating by process group only", process.pid, cgroup.path, exc
            )
            joined = None

    await _open_gate(process, gate_w, out_r, configure=join_cgroup, limits=parent_limits, ready=ready)
    return Spawned(process, out_r, joined)


async def _open_gate(
    process: asyncio.subprocess.Process,
    gate_fd: int,
    output_fd: int,
    *,
    configure: Callable[[], None],  # run in a thread, before the limits
    limits: Sequence[RlimitSetting],
    ready: Awaitable[None] | None,
) -> None:
    """Configure the held trampoline from outside (``configure``, then the rlimits), wait for ``ready``, then open
    its gate. On any failure the gate is closed unwritten (the trampoline exits 125 without running
    anything), the process is reaped, the output pipe closed, and SpawnRefused (or the error itself) raised."""
    try:
        # In a thread: a cgroup move waits for the kernel (an RCU grace period, up to ~20 ms), the event loop must not.
        await asyncio.to_thread(configure)
        for res, soft, hard in limits:
            resource.prlimit(process.pid, res, (soft, hard))
        if ready is not None:
            try:
                await ready
            except OSError as exc:
                raise _NotReady(str(exc)) from exc
    except BaseException as exc:
        os.close(gate_fd)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(process.wait())
        os.close(output_fd)
        refused = _refused(exc)
        if refused is exc:
            raise
        raise refused from exc
    try:
        os.write(gate_fd, b"go\n")
    finally:
        os.close(gate_fd)


class _NotReady(Exception):
    """`ready` failed: the command must not run."""


def _refused(exc: BaseException) -> BaseException:
    """What a start that failed after the process existed raises: SpawnRefused for a person, else ``exc`` itself."""
    if isinstance(exc, SpawnRefused):
        return exc
    if isinstance(exc, _NotReady):
        return SpawnRefused(
            EXIT_CANNOT_EXECUTE, f"not run: the agent could not record the command id on disk first: {exc}"
        )
    if isinstance(exc, OSError):
        return SpawnRefused(
            EXIT_CANNOT_EXECUTE, f"cannot apply resource limits to the command: {exc}; check the agent's limits"
        )
    return exc


def _refusal(exc: BaseException, cwd: str) -> BaseException:
    if isinstance(exc, FileNotFoundError) and exc.filename == cwd:
        return SpawnRefused(EXIT_CANNOT_EXECUTE, f"working directory {cwd!r} disappeared before the start")
    if isinstance(exc, PermissionError):
        return SpawnRefused(EXIT_CANNOT_EXECUTE, f"permission denied while starting the command: {exc}")
    if isinstance(exc, OSError):
        return SpawnRefused(EXIT_CANNOT_EXECUTE, f"cannot start the command: {exc.strerror or exc}")
    if isinstance(exc, subprocess.SubprocessError):  # the run_as preexec_fn failed
        return SpawnRefused(
            EXIT_CANNOT_EXECUTE, f"cannot set limits or switch user for the command: {exc}; check run_as and limits"
        )
    return exc  # CancelledError and the like propagate unchanged
