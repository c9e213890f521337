"""Runs one command on this host: own session, clean env, rlimits, timeout that kills the whole tree, capped output.

How a command runs (``run``):

- argv is exec'd directly (never a shell) in a new session, stdin on /dev/null, stdout and stderr into one pipe;
- the environment is PATH (fixed), LANG=C.UTF-8, HOME and the caller's ``env``. In a running agent only the
  names the host's policy lists under ``env:`` may be sent, and ``cwd`` must be ``/`` or listed under ``cwd:``
  (``environment.install_policy``); loader and interpreter variables (LD_PRELOAD, PATH, GIT_*, PYTHON*, …) are
  refused whatever the policy. A request breaking either is refused as a whole, never trimmed. Every command's
  argv, added env and cwd are logged on this host with the decision (``agent.command_exec`` /
  ``agent.command_refused``);
- with ``run_as`` and a root agent the child drops to that user; before it may exec, it is moved into its own
  cgroup (when available) and given its rlimits (see ``spawn`` for the gate, ``rlimits``, ``cgroup``);
- after ``timeout_s`` (or when ``cancel`` is set): SIGTERM to the process group and the cgroup, ``kill_grace_s``
  later SIGKILL to both. When the command's own process ends, whatever it left running is SIGKILLed too;
- output is read in chunks into a head + tail buffer capped at ``output_cap_bytes``; the head is streamed to
  ``on_output`` as it arrives. Once the process is gone the pipe is drained for at most ``drain_s`` and closed,
  so a grandchild that escaped and holds the pipe open cannot keep ``run`` from returning: ``run`` returns
  within about timeout + grace + 1 s in every case.

Isolation: with cgroup v2 where the agent may create child cgroups, each command gets ``teleops-cmd-<id>``
and ``setsid`` escapees die with it (``RunResult.isolation == "cgroup"``). Otherwise only the process group is
signalled (``"process-group"``): a descendant that left the group survives the timeout, but ``run`` still
returns on time. ``"none"`` means nothing was started (a refusal or spawn error, see ``RunResult.error``).

Process count: ``pids.max`` = ``limits.nproc`` in the command's cgroup v2, else in a group of the cgroup v1 pids
hierarchy (agent/cgroup.py), else only RLIMIT_NPROC, which does not bind root: a command that would run as root
with no cgroup bound is refused (exit 126, ``cgroup.decide_pids_bound``; docs/agent-runner.md).

Nothing here raises for a bad command: problems become a RunResult with ``error`` set, its message also put in
``output`` (and streamed) the way a shell prints "command not found".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import pwd
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from teleops.agent.cgroup import CommandCgroup, PidsBoundError, decide_pids_bound, missing_pids_notes, runs_privileged
from teleops.agent.environment import EnvironmentRefused, build_environment, check_cwd, installed_policy
from teleops.agent.identity import Identity, IdentityError, resolve_identity
from teleops.agent.output import CappedOutput
from teleops.agent.rlimits import ResourceLimits
from teleops.agent.spawn import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, SpawnRefused, spawn

__all__ = [
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "EXIT_TIMEOUT",
    "ISOLATION_CGROUP",
    "ISOLATION_NONE",
    "ISOLATION_PROCESS_GROUP",
    "OutputSink",
    "ResourceLimits",
    "RunResult",
    "RunSpec",
    "finish_disposals",
    "run",
]

log = logging.getLogger(__name__)
# The host-local record of what each command was started (or refused) with: argv, added env, cwd
# (docs/threat-model.md T14).
audit_log = structlog.get_logger("teleops.agent.runner")

EXIT_TIMEOUT = 124

ISOLATION_CGROUP = "cgroup"
ISOLATION_PROCESS_GROUP = "process-group"
ISOLATION_NONE = "none"

_CHUNK = 64 * 1024
# How long to wait for a SIGKILLed process (or cgroup) to be gone before moving on regardless.
_REAP_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class RunSpec:
    argv: Sequence[str]
    timeout_s: float = 60.0
    kill_grace_s: float = 3.0
    output_cap_bytes: int = 64 * 1024
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)  # added to the clean base environment
    command_id: str | None = None  # names the cgroup (teleops-cmd-<id>) and log lines
    run_as: str | None = None  # user to switch to (agent must be root); needed for RLIMIT_NPROC to bind
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    use_cgroup: bool = True  # False forces the process-group fallback
    drain_s: float = 0.5  # how long to keep reading output once the command's process is gone
    # Called with the command's cgroup directories once its process is in them, so that a later run of the agent
    # can find and kill what this one leaves if it is killed mid-command (agent/orphans.py).
    on_cgroups: Callable[[list[Path]], None] | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int  # the child's; 124 timeout; 128+N killed by signal N; 126 not executable; 127 not found
    signal: int | None
    timed_out: bool
    cancelled: bool
    truncated: bool
    output: bytes  # head + marker + tail when truncated, at most about output_cap_bytes
    output_bytes: int  # everything the command printed, kept or not
    duration_s: float
    isolation: str = ISOLATION_NONE  # "cgroup" | "process-group" | "none" (nothing started)
    error: str | None = None  # why the command could not run, for a person; None when it ran


# Receives each chunk of interleaved stdout+stderr as it arrives (already counted against the cap). Only the head
# (first half of the cap) is streamed; if the sink raises, streaming stops but the command keeps running.
OutputSink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    argv: tuple[str, ...]
    env: dict[str, str]
    identity: Identity | None


def _agent_home() -> str:
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir or "/"
    except KeyError:
        return "/"


def _prepare(spec: RunSpec) -> _Prepared:
    argv = tuple(spec.argv)
    if not argv or not argv[0]:
        raise SpawnRefused(EXIT_NOT_FOUND, "empty command: nothing to run")
    if any(not isinstance(a, str) or "\x00" in a for a in argv):
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, "command arguments must be text without NUL bytes")
    if not (math.isfinite(spec.timeout_s) and spec.timeout_s > 0):
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, f"timeout must be a positive number of seconds, got {spec.timeout_s}")
    if not (math.isfinite(spec.kill_grace_s) and spec.kill_grace_s >= 0):
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, f"kill grace must be zero or more seconds, got {spec.kill_grace_s}")
    if spec.output_cap_bytes < 2:
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, f"output cap must be at least 2 bytes, got {spec.output_cap_bytes}")
    policy = installed_policy()
    try:
        check_cwd(spec.cwd, policy)
    except EnvironmentRefused as exc:
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, str(exc)) from None
    if not os.path.isabs(spec.cwd) or not os.path.isdir(spec.cwd):
        raise SpawnRefused(
            EXIT_CANNOT_EXECUTE,
            f"working directory {spec.cwd!r} does not exist on this host (or is not an absolute directory path); "
            "pick an existing directory",
        )
    try:
        identity = resolve_identity(spec.run_as)
        home = identity.home if identity is not None else _agent_home()
        env = build_environment(spec.env, home=home, policy=policy)
    except (IdentityError, EnvironmentRefused) as exc:
        raise SpawnRefused(EXIT_CANNOT_EXECUTE, str(exc)) from None
    return _Prepared(argv, env, identity)


async def _emit(sink: OutputSink | None, data: bytes) -> OutputSink | None:
    """Stream data; returns the sink to keep using, or None once it has failed."""
    if sink is None or not data:
        return sink
    try:
        await sink(data)
    except Exception:
        log.exception("output sink failed; output is still collected for the final result")
        return None
    return sink


async def _refusal(exit_code: int, message: str, started: float, sink: OutputSink | None) -> RunResult:
    text = f"teleops-agent: {message}\n".encode()
    await _emit(sink, text)
    return RunResult(
        exit_code=exit_code,
        signal=None,
        timed_out=False,
        cancelled=False,
        truncated=False,
        output=text,
        output_bytes=len(text),
        duration_s=time.monotonic() - started,
        isolation=ISOLATION_NONE,
        error=message,
    )


async def _read_chunk(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, _CHUNK)
        except BlockingIOError:
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _pump(fd: int, buffer: CappedOutput, sink: OutputSink | None) -> None:
    """Read the pipe to EOF into the buffer, streaming the head."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    while chunk := await _read_chunk(loop, fd):
        sink = await _emit(sink, buffer.feed(chunk))
        # A pipe that is never empty (`yes`) would otherwise keep this loop from ever yielding to the timer.
        await asyncio.sleep(0)


class _Tree:
    """Signals everything the command started: its process group and, when there is one, its cgroup."""

    def __init__(self, pgid: int, cgroup: CommandCgroup | None) -> None:
        self.pgid = pgid
        self.cgroup = cgroup

    def terminate(self) -> None:
        self._killpg(signal.SIGTERM)
        if self.cgroup is not None:
            self.cgroup.signal_all(signal.SIGTERM)

    def kill(self) -> None:
        # After the leader is reaped this still reaches the rest of its group: the kernel keeps a pid reserved
        # while it names a live process group. Once the group is empty the pid could in theory be reused by a
        # new session leader, but that needs a full pid wrap-around within the few hundred ms we signal.
        self._killpg(signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)


async def _supervise(
    spec: RunSpec,
    proc: asyncio.subprocess.Process,
    read_fd: int,
    tree: _Tree,
    sink: OutputSink | None,
    cancel: asyncio.Event | None,
    started: float,
) -> RunResult:
    buffer = CappedOutput(spec.output_cap_bytes)
    pump = asyncio.create_task(_pump(read_fd, buffer, sink))
    exited = asyncio.create_task(proc.wait())
    cancel_wait = asyncio.create_task(cancel.wait()) if cancel is not None else None
    timed_out = cancelled = False
    try:
        waiters: set[asyncio.Future[object]] = {exited}  # type: ignore[arg-type]
        if cancel_wait is not None:
            waiters.add(cancel_wait)  # type: ignore[arg-type]
        await asyncio.wait(waiters, timeout=spec.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            cancelled = cancel is not None and cancel.is_set()
            timed_out = not cancelled
            log.info("command %s: %s, terminating", spec.command_id, "cancelled" if cancelled else "timed out")
            tree.terminate()
            await asyncio.wait({exited}, timeout=spec.kill_grace_s)
            if not exited.done():
                tree.kill()
                await asyncio.wait({exited}, timeout=_REAP_WAIT_S)
        else:
            # Let a background child that still holds the pipe finish printing, up to drain_s.
            await asyncio.wait({pump}, timeout=spec.drain_s)
        tree.kill()  # whatever the command left running dies with it
        if tree.cgroup is not None and not await tree.cgroup.wait_empty(_REAP_WAIT_S):
            log.warning("command %s: cgroup %s not empty after SIGKILL", spec.command_id, tree.cgroup.path)
        if not pump.done():
            await asyncio.wait({pump}, timeout=spec.drain_s)
    finally:
        if not exited.done():  # run() itself was cancelled, or the process would not die: leave nothing behind
            tree.kill()
        for task in (pump, exited, cancel_wait):
            if task is not None and not task.done():
                task.cancel()
        # Closing our end makes any escaped writer get SIGPIPE instead of keeping us waiting.
        await asyncio.gather(pump, return_exceptions=True)
        os.close(read_fd)

    returncode = proc.returncode
    if returncode is None:  # did not die within _REAP_WAIT_S of SIGKILL (uninterruptible sleep)
        returncode = -signal.SIGKILL
    sig = -returncode if returncode < 0 else None
    exit_code = EXIT_TIMEOUT if timed_out else (128 + sig if sig is not None else returncode)
    return RunResult(
        exit_code=exit_code,
        signal=sig,
        timed_out=timed_out,
        cancelled=cancelled,
        truncated=buffer.truncated,
        output=buffer.value(),
        output_bytes=buffer.total,
        duration_s=time.monotonic() - started,
        isolation=ISOLATION_CGROUP if tree.cgroup is not None else ISOLATION_PROCESS_GROUP,
    )


async def run(
    spec: RunSpec,
    on_output: OutputSink | None = None,
    *,
    cancel: asyncio.Event | None = None,
    ready: Awaitable[None] | None = None,
) -> RunResult:
    """Run spec.argv to completion, timeout or cancellation and report how it ended (see the module docstring).

    Never raises for a bad or failing command: refusals (empty argv, refused env var, missing cwd, unknown
    run_as) and spawn errors come back with ``error`` set and exit code 127 (not found / empty) or 126.
    Setting ``cancel`` terminates the command like a timeout, with ``cancelled=True`` and the exit code of how
    it actually died. Cancelling the ``run`` task itself SIGKILLs the command and re-raises CancelledError.
    ``ready`` is awaited after the process is set up and before it may exec (see ``spawn``); a refused start
    still awaits it, so the caller never leaves it pending. Every command starts cold, in a process forked for it
    (docs/adr/0010-no-warm-spawn.md).
    """
    started = time.monotonic()
    try:
        prepared = _prepare(spec)
    except SpawnRefused as exc:
        _log_decision(spec, refused=str(exc))
        await _settle(ready)
        return await _refusal(exc.exit_code, str(exc), started, on_output)
    limits = spec.limits.settings(timeout_s=spec.timeout_s, kill_grace_s=spec.kill_grace_s)
    # A command exempt from RLIMIT_NPROC (root) runs only inside a cgroup whose pids.max bounds it
    # (docs/threat-model.md F08).
    identity = prepared.identity
    privileged = spec.limits.nproc is not None and runs_privileged(
        identity.uid if identity is not None and identity.switch else None
    )
    cgroup = None
    try:
        cgroup = CommandCgroup.create(spec.command_id, pids_max=spec.limits.nproc, isolate=spec.use_cgroup)
        if privileged:
            refusal = _pids_refusal(cgroup, spec)
            if refusal is not None:
                _log_decision(spec, refused=refusal)
                await _settle(ready)
                return await _refusal(EXIT_CANNOT_EXECUTE, refusal, started, on_output)
            assert cgroup is not None  # a bound exists
            cgroup.require_pids_bound = True
        _log_decision(spec, refused=None)
        spawned = await spawn(
            prepared.argv,
            cwd=spec.cwd,
            env=prepared.env,
            identity=prepared.identity,
            limits=limits,
            cgroup=cgroup,
            ready=ready,
        )
        if spec.on_cgroups is not None and spawned.cgroup is not None:
            spec.on_cgroups(list(dict.fromkeys(p for p in (spawned.cgroup.path, spawned.cgroup.pids_v1) if p)))
        # A group made only to bound the process count (no cgroup v2 for this command) does not isolate it.
        held = spawned.cgroup if spawned.cgroup is not None and spawned.cgroup.isolates else None
        tree = _Tree(spawned.process.pid, held)
        return await _supervise(spec, spawned.process, spawned.output_fd, tree, on_output, cancel, started)
    except SpawnRefused as exc:
        await _settle(ready)
        return await _refusal(exc.exit_code, str(exc), started, on_output)
    except PidsBoundError as exc:  # the process was stopped at its gate: nothing ran
        _log_decision(spec, refused=str(exc))
        await _settle(ready)
        return await _refusal(EXIT_CANNOT_EXECUTE, str(exc), started, on_output)
    finally:
        if cgroup is not None:
            _dispose(cgroup)


def _pids_refusal(cgroup: CommandCgroup | None, spec: RunSpec) -> str | None:
    """Why a command that would run as root must not run (no cgroup pids.max bounds it), else None."""
    mechanism = cgroup.pids_mechanism if cgroup is not None else None
    if mechanism is not None:
        return None
    v2_note, v1_note = missing_pids_notes(isolate=spec.use_cgroup)
    return decide_pids_bound(v2=False, v1=False, privileged=True, v2_note=v2_note, v1_note=v1_note).refusal


def _log_decision(spec: RunSpec, *, refused: str | None) -> None:
    """One line per command in the agent's own log: argv, the variables added to the fixed base (as requested:
    on a start they are the ones the host's policy permits), cwd, and whether it runs or why not."""
    fields = {
        "command_id": spec.command_id,
        "argv": list(spec.argv),
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "run_as": spec.run_as,
    }
    if refused is None:
        audit_log.info("agent.command_exec", decision="run", **fields)
    else:
        audit_log.warning("agent.command_refused", decision="refused", reason=refused, **fields)


async def _settle(ready: Awaitable[None] | None) -> None:
    """Wait for `ready` if the start never got to it (its failure is reported by whoever started it)."""
    if ready is not None:
        with contextlib.suppress(Exception):
            await ready


_disposals: set[asyncio.Future[None]] = set()


async def finish_disposals() -> None:
    """Wait until the cgroups of finished commands are removed (at agent shutdown, so none is left behind)."""
    while _disposals:
        await asyncio.gather(*list(_disposals), return_exceptions=True)


def _dispose(cgroup: CommandCgroup) -> None:
    """Remove the cgroup in the background (killing what is left first), never holding up the result: the rmdir
    waits for the kernel's cgroup_mutex, which a process move elsewhere holds through an RCU grace period. An empty
    one (the usual case) is queued on the executor at once, so it is removed even if the event loop ends first."""
    loop = asyncio.get_running_loop()
    if not cgroup.populated():
        removal: asyncio.Future[None] = loop.run_in_executor(None, cgroup.remove)
    else:

        async def later() -> None:
            cgroup.kill()
            await cgroup.wait_empty(5.0)
            await asyncio.to_thread(cgroup.remove)

        removal = loop.create_task(later())
    _disposals.add(removal)
    removal.add_done_callback(_disposals.discard)
