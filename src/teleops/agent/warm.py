"""Warm trampolines: the next command's process is started ahead of time, already inside its own cgroup.

Moving a process into a cgroup (a write to ``cgroup.procs``) takes the kernel's cgroup_threadgroup_rwsem for
writing, which first waits for an RCU grace period: 5–20 ms on a machine that was idle a moment before, more
than everything else the agent does for a short command (docs/benchmarks.md, "B6 command path"). Processes
forked *inside* a cgroup pay nothing, but a command needs a cgroup of its own. So the agent keeps one trampoline
started, moved into a fresh cgroup and blocked on its gate pipe, before any command asks for it::

    /bin/sh -c 'nl=<newline>; IFS= read -r line || exit 125; eval "$line"' teleops-run

A command takes it (``WarmTrampolines.take``) and a new one is started in the background once the controller has
acknowledged a result (``refill``: the agent is idle then), or ``REFILL_AFTER_S`` after the take if that comes
later: starting a trampoline (a fork and exec of ``sh``, a cgroup made) while a short command starts made that
command ~1.7 ms slower (2.2 → 3.9 ms for ``true``), and while its result is reported, the report slower. The
agent sets the
command's pids limit and rlimits from outside, as for a cold start (``spawn``), then writes one line to the gate:

    cd -- '/srv' || exit 126; unset PWD OLDPWD; export 'PATH=…' 'HOME=…'; set -- 'df' '-h'; exec "$@" </dev/null

Unlike the cold trampoline, whose argv reaches ``exec`` as positional parameters, this one has to learn its argv
after it started, so the shell parses that line. Every word in it is single-quoted by ``quote`` (a single quote
becomes ``'"'"'``, a newline ``'"$nl"'``, so the line has none and ``read`` takes it whole), environment names
must be plain identifiers, and argv never contains NUL (checked before): eval only ever sees quoted literals.
A root agent starts its trampolines as the user most of its commands run as (the policy's default ``run_as``,
``identity``). A process of another user cannot be given limits from outside without CAP_SYS_RESOURCE (which a
container's root often lacks), so such a trampoline is started with the command limits already set, all but the
CPU time, which depends on the command's timeout: its gate line lowers that itself (``ulimit -S -t N && ulimit -H
-t N+1``; lowering a limit needs no privilege). Commands the warm path does not fit (another ``run_as`` user, other
limits, a line over ``MAX_LINE_BYTES``) start cold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import resource
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from teleops.agent.cgroup import CommandCgroup, announce_pids_bound, cgroup_parent, pids_v1_parent
from teleops.agent.identity import Identity, become
from teleops.agent.rlimits import RlimitSetting

__all__ = ["MAX_LINE_BYTES", "Warm", "WarmTrampolines", "gate_line", "quote"]

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4096  # dash reads the gate a byte at a time; longer commands start cold
REFILL_AFTER_S = 0.05  # the next trampoline warms when a result is acknowledged, or this long after a take
TAKE_WAIT_S = 0.2  # how long a command waits for a trampoline being warmed before it starts cold
POOL_SIZE = 2  # a spare for back-to-back commands: a cgroup move (the refill) takes up to ~30 ms now and then
_SHELL = "/bin/sh"
_NAME = "teleops-run"
_SCRIPT = "nl='\n'; IFS= read -r line || exit 125; eval \"$line\""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WARM_PREFIX = "warm-"  # cgroup teleops-cmd-warm-<agent pid>-<random>


@dataclass(slots=True)
class Warm:
    """A trampoline blocked on its gate: write ``gate_line(...)`` to ``gate_fd`` and it execs; close it unwritten
    and it exits 125. The taker owns all of it: the process, both descriptors and the cgroup."""

    process: asyncio.subprocess.Process
    output_fd: int  # read end of its stdout+stderr pipe
    gate_fd: int
    cgroup: CommandCgroup | None


def quote(word: str) -> str:
    """``word`` as one single-quoted shell word without a newline character (see the module docstring)."""
    return "'" + word.replace("'", "'\"'\"'").replace("\n", "'\"$nl\"'") + "'"


def gate_line(
    argv: Sequence[str], *, cwd: str, env: Mapping[str, str], cpu: tuple[int, int] | None = None
) -> bytes | None:
    """The line that makes a warm trampoline become ``argv`` in ``cwd`` with exactly ``env`` (and, with ``cpu``, its
    soft and hard CPU-time limits lowered to those seconds); None when this command must start cold (an environment
    name that is not an identifier, NUL anywhere, a line over MAX_LINE_BYTES)."""
    words = [cwd, *argv, *env.keys(), *env.values()]
    if any("\x00" in w for w in words) or not all(_ENV_NAME.fullmatch(name) for name in env):
        return None
    exports = " ".join(quote(f"{name}={value}") for name, value in env.items())
    limit = f"ulimit -S -t {int(cpu[0])} && ulimit -H -t {int(cpu[1])} || exit 126; " if cpu is not None else ""
    line = (
        limit
        + f"cd -- {quote(cwd)} || exit 126; unset PWD OLDPWD; "
        + (f"export {exports}; " if exports else "")
        + f'set -- {" ".join(quote(a) for a in argv)}; exec "$@" </dev/null\n'
    )
    encoded = os.fsencode(line)
    return encoded if len(encoded) <= MAX_LINE_BYTES else None


class WarmTrampolines:
    """Keeps POOL_SIZE warm trampolines ready (``take`` one; ``refill`` once a result is acknowledged, or the next
    one starts warming REFILL_AFTER_S after the take; one warms at a time); ``close`` at the end."""

    def __init__(
        self,
        *,
        use_cgroup: bool = True,
        pids_max: int | None = None,
        identity: Identity | None = None,
        limits: Sequence[RlimitSetting] = (),
    ) -> None:
        self._use_cgroup = use_cgroup
        # Who the trampolines run as: None or an identity without ``switch`` is the agent's own user. Those of
        # another user start with ``limits`` (all but RLIMIT_CPU: see the module docstring).
        self._identity = identity if identity is not None and identity.switch else None
        self._limits = tuple(x for x in limits if x[0] != resource.RLIMIT_CPU) if self._identity is not None else ()
        self._pids_max = pids_max  # set when the cgroup is made (the usual limit), so a command need not write it
        self._ready: collections.deque[Warm] = collections.deque()
        self._starting: asyncio.Task[bool] | None = None
        self._refill_later: asyncio.TimerHandle | None = None
        self._started = False  # nothing warms before `start`
        self._closed = False

    @property
    def use_cgroup(self) -> bool:
        return self._use_cgroup

    @property
    def switched(self) -> bool:
        """True when the trampolines run as another user than the agent (limits are then set at their start)."""
        return self._identity is not None

    def fits(self, identity: Identity | None, limits: Sequence[RlimitSetting]) -> bool:
        """Whether a command running as ``identity`` (None: the agent's user) with ``limits`` can start on these
        trampolines: the same user, and for another user's trampolines the same limits but the CPU time."""
        wanted = identity.uid if identity is not None and identity.switch else None
        have = self._identity.uid if self._identity is not None else None
        if wanted != have:
            return False
        return have is None or tuple(x for x in limits if x[0] != resource.RLIMIT_CPU) == self._limits

    def start(self) -> None:
        """Remove what warm trampolines of agents that died left behind, and begin warming the first one (call from
        the event loop). This is the agent's start: it also decides and logs how commands' process counts are
        bounded (``agent.pids_bound``, agent/cgroup.py)."""
        announce_pids_bound()
        _sweep_orphans()
        self._started = True
        self._refill()

    def take(self) -> Warm | None:
        """A warm trampoline, if one is ready (the next one warms later: see ``refill``); None: start this command
        cold."""
        warm = None
        while self._ready and warm is None:
            warm = self._ready.popleft()
            if warm.process.returncode is not None:  # it died meanwhile (killed from outside)
                _discard(warm)
                if warm.cgroup is not None:
                    warm.cgroup.remove()
                warm = None
        if warm is None:
            self._refill()  # this command starts cold anyway: warm the next one now
        elif self._refill_later is None:
            self._refill_later = asyncio.get_running_loop().call_later(REFILL_AFTER_S, self.refill)
        return warm

    async def take_soon(self) -> Warm | None:
        """``take``, but when a trampoline is being warmed right now, wait for it first: a cold start would wait for
        a cgroup move of its own (after that one), so this is never slower, and back-to-back commands stay warm."""
        starting = self._starting
        if not self._ready and starting is not None and not starting.done():
            await asyncio.wait({starting}, timeout=TAKE_WAIT_S)  # a move stuck in the kernel: start cold instead
        return self.take()

    def refill(self) -> None:
        """Start warming the next trampoline unless POOL_SIZE are ready or one is warming (call when the agent is
        idle)."""
        if self._refill_later is not None:
            self._refill_later.cancel()
            self._refill_later = None
        self._refill()

    async def close(self) -> None:
        self._closed = True
        if self._refill_later is not None:
            self._refill_later.cancel()
            self._refill_later = None
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        while self._ready:
            warm = self._ready.popleft()
            _discard(warm)
            with contextlib.suppress(ProcessLookupError):
                warm.process.kill()
            await warm.process.wait()
            if warm.cgroup is not None:
                warm.cgroup.remove()

    def _refill(self) -> None:
        if (
            not self._started
            or self._closed
            or len(self._ready) >= POOL_SIZE
            or (self._starting is not None and not self._starting.done())
        ):
            return
        self._starting = asyncio.get_running_loop().create_task(self._warm_one(), name="agent-warm-trampoline")
        self._starting.add_done_callback(self._warmed)

    async def _warm_one(self) -> bool:
        """Warm one trampoline; True when it joined the pool (then the next may start: see ``_warmed``)."""
        try:
            warm = await _start(self._use_cgroup, self._pids_max, self._identity, self._limits)
        except Exception:  # the next command simply starts cold; say why once per failure
            log.warning("could not start a warm trampoline; commands start cold meanwhile", exc_info=True)
            return False
        if self._closed:
            _discard(warm)
            warm.process.kill()
            await warm.process.wait()
            if warm.cgroup is not None:
                warm.cgroup.remove()
            return False
        self._ready.append(warm)
        return True

    def _warmed(self, task: asyncio.Task[bool]) -> None:
        """Fill the pool one trampoline at a time; after a failure wait for the next take or refill to try again."""
        if not task.cancelled() and task.exception() is None and task.result():
            self._refill()


async def _start(
    use_cgroup: bool, pids_max: int | None, identity: Identity | None, limits: Sequence[RlimitSetting]
) -> Warm:
    name = f"{_WARM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    # Without use_cgroup the group only bounds the process count (the runner kills by process group).
    cgroup = CommandCgroup.create(name, pids_max=pids_max, isolate=use_cgroup)
    out_r, out_w = os.pipe()
    gate_r, gate_w = os.pipe()
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                _SHELL,
                "-c",
                _SCRIPT,
                _NAME,
                stdin=gate_r,
                stdout=out_w,
                stderr=out_w,
                cwd="/",
                env={},
                start_new_session=True,
                close_fds=True,
                preexec_fn=become(identity, limits) if identity is not None else None,
            )
        finally:
            os.close(out_w)
            os.close(gate_r)
    except BaseException:
        os.close(out_r)
        os.close(gate_w)
        if cgroup is not None:
            cgroup.remove()
        raise
    if cgroup is not None:
        try:
            # In a thread: the write waits for the kernel (see the module docstring), the event loop must not.
            await asyncio.to_thread(cgroup.add, process.pid)
        except OSError as exc:
            log.warning(
                "cannot move pid %s into %s (%s); isolating by process group only", process.pid, cgroup.path, exc
            )
            cgroup.remove()
            cgroup = None
    return Warm(process, out_r, gate_w, cgroup)


def _sweep_orphans() -> None:
    """rmdir the empty cgroups of warm trampolines whose agent is gone (killed before it could clean up; its
    trampoline then read EOF on the gate and exited, leaving the cgroup empty)."""
    for parent, v2 in ((cgroup_parent(), True), (pids_v1_parent(), False)):
        if parent is None:
            continue
        for path in parent.glob(f"teleops-cmd-{_WARM_PREFIX}*"):
            owner = path.name.removeprefix(f"teleops-cmd-{_WARM_PREFIX}").split("-", 1)[0]
            if not owner.isdigit() or _alive(int(owner)):
                continue
            orphan = CommandCgroup(path, v2=v2)
            if not orphan.populated():
                orphan.remove()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _discard(warm: Warm) -> None:
    """Close our descriptors: the trampoline reads EOF on its gate and exits 125 without running anything."""
    for fd in (warm.gate_fd, warm.output_fd):
        with contextlib.suppress(OSError):
            os.close(fd)
