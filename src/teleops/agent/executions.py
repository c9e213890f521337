"""The commands this agent accepted: each runs at most once, is reported, and stays in the spool until the
controller acknowledges its result.

- An exec whose id was seen before (also before a restart) is refused, never run twice; the id is on disk
  before the command may exec (the fsync overlaps the fork: the runner's start gate waits for it).
- The result is spooled while it travels: a command stays in `running` until the spool has its result, so a
  hello built in between lists it as running or as a result, never as neither.
- A cancel kills the command's process group; an ack lets the spool forget the result (once it is written).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import structlog

from teleops.agent.allowlist import Allowlist
from teleops.agent.cgroup import announce_pids_bound
from teleops.agent.environment import EnvironmentRefused, build_environment, check_cwd, installed_policy
from teleops.agent.identity import IdentityError, resolve_identity
from teleops.agent.orphans import mark_running, reap_orphans, unmark_running
from teleops.agent.runner import RunSpec, finish_disposals, run
from teleops.agent.spool import Spool
from teleops.domain.redaction import Redactor, redact
from teleops.wire import Ack, Cancel, Exec, Exit, Message, Output, Refused, Started

__all__ = ["Executions"]

log = structlog.get_logger(__name__)


class Executions:
    """`send` delivers a message on the current connection (False when there is none); `connection` names the
    current connection (any object, compared by identity), so a result is re-sent after a reconnect."""

    def __init__(
        self,
        *,
        allowlist: Allowlist,
        spool: Spool,
        max_concurrent: int,
        kill_grace_s: float,
        send: Callable[[Message], Awaitable[bool]],
        connection: Callable[[], object | None],
    ) -> None:
        self._allowlist = allowlist
        self._spool = spool
        self._max_concurrent = max_concurrent
        self._kill_grace_s = kill_grace_s
        self._send = send
        self._connection = connection
        self._running: dict[str, asyncio.Event] = {}  # command id → its cancel event
        self._spooling: dict[str, asyncio.Future[None]] = {}  # command id → its result being written
        self._tasks: set[asyncio.Task[None]] = set()
        self._agent_is_root = os.geteuid() == 0

    @property
    def running(self) -> list[str]:
        return list(self._running)

    def start(self) -> None:
        """Kill what an earlier run of this agent left running (its results go to the spool, so the first hello
        reports them), then decide and log how commands' process counts are bounded (``agent.pids_bound``,
        agent/cgroup.py). Call once the event loop runs."""
        reap_orphans(self._spool, self._running)
        announce_pids_bound()

    async def stop(self) -> None:
        """Cancel every running command (the runner kills their process groups) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await finish_disposals()

    async def on_exec(self, message: Message) -> None:
        assert isinstance(message, Exec)
        command_id = message.command_id
        bound = log.bind(command_id=command_id, argv0=message.argv[0])
        if command_id in self._running or self._spool.seen(command_id):
            await self._refuse(bound, command_id, f"command {command_id} was already received here; never run twice")
            return
        decision = self._allowlist.check(message.argv, cwd=message.cwd)
        if not decision.allowed:
            self._spool.remember(command_id)
            await self._refuse(bound, command_id, decision.reason, argv=message.argv)
            return
        # The environment and directory the controller asks for must be ones this host's policy permits (env:,
        # cwd:); refused here, before `started`, so the controller records `denied` with the reason.
        policy = installed_policy()
        try:
            check_cwd(message.cwd, policy)
            build_environment(message.env, home="/", policy=policy)
        except EnvironmentRefused as exc:
            self._spool.remember(command_id)
            await self._refuse(bound, command_id, str(exc), argv=message.argv, env=message.env, cwd=message.cwd)
            return
        run_as = self._allowlist.runs_as(decision, agent_is_root=self._agent_is_root)
        try:
            resolve_identity(run_as)  # a user removed since the start: refused before `started`, saying so
        except IdentityError as exc:
            self._spool.remember(command_id)
            await self._refuse(bound, command_id, str(exc), argv=message.argv)
            return
        if len(self._running) >= self._max_concurrent:
            await self._refuse(bound, command_id, f"busy: {len(self._running)} commands running (the limit)")
            return
        # At most once, also across restarts: the id is on disk before the command may exec. The fsync runs in a
        # worker thread while the process is being set up; the runner opens its start gate only after it.
        self._spool.note_seen(command_id)
        remembered = asyncio.ensure_future(asyncio.to_thread(self._spool.persist_seen, command_id))
        cancel = asyncio.Event()
        self._running[command_id] = cancel
        task = asyncio.create_task(self._execute(message, cancel, remembered, run_as), name=f"command-{command_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refuse(
        self,
        bound: structlog.typing.FilteringBoundLogger,
        command_id: str,
        reason: str,
        argv: list[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        bound.warning(
            "agent.command_refused", decision="refused", reason=reason, argv=argv, env=dict(env or {}), cwd=cwd
        )
        await self._send(Refused(command_id=command_id, reason=reason))

    async def _execute(
        self, message: Exec, cancel: asyncio.Event, remembered: asyncio.Future[None], run_as: str | None
    ) -> None:
        command_id = message.command_id
        bound = log.bind(command_id=command_id, argv0=message.argv[0])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        seq = 0

        # Secrets are masked before anything leaves this host; a secret split across chunks is held back whole.
        rules = self._allowlist.redaction
        redactor = Redactor(rules)

        async def on_output(chunk: bytes) -> None:
            nonlocal seq
            text = redactor.feed(decoder.decode(chunk))
            if text:
                await self._send(Output(command_id=command_id, seq=seq, data=text))
                seq += 1

        bound.info("agent.command_started", argv=message.argv, timeout_s=message.timeout_s, run_as=run_as)
        await self._send(Started(command_id=command_id))
        spec = RunSpec(
            argv=list(message.argv),
            timeout_s=message.timeout_s,
            kill_grace_s=self._kill_grace_s,
            output_cap_bytes=message.output_cap_bytes,
            cwd=message.cwd,
            env=dict(message.env),
            command_id=command_id,
            run_as=run_as,
            on_cgroups=lambda paths: mark_running(self._spool.directory, command_id, paths),
        )
        try:
            result = await run(spec, on_output, cancel=cancel, ready=remembered)
            exit_ = Exit(
                command_id=command_id,
                exit_code=result.exit_code,
                signal=result.signal,
                timed_out=result.timed_out,
                cancelled=result.cancelled,
                truncated=result.truncated,
                output_bytes=result.output_bytes,
                duration_s=result.duration_s,
                output=redact(result.output.decode("utf-8", errors="backslashreplace"), self._allowlist.redaction),
                finished_at=datetime.now(UTC),
            )
        except Exception as exc:  # the runner promises not to raise; if it does, report rather than vanish
            bound.exception("agent.runner_failed")
            exit_ = Exit(command_id=command_id, exit_code=126, output=f"teleops agent: could not run it: {exc}\n")
        unmark_running(self._spool.directory, command_id)  # the runner left nothing of it behind
        try:
            await remembered  # done already: the runner waited for it before the command could start
        except OSError as exc:
            bound.error("agent.seen_not_saved", error=str(exc), hint="free disk space in the state directory")
        bound.info(
            "agent.command_finished",
            exit_code=exit_.exit_code,
            timed_out=exit_.timed_out,
            duration_s=round(exit_.duration_s, 3),
        )
        # The result is spooled (so it survives a drop or a restart) while it travels: the command stays in
        # `_running` until the spool has it, so a hello in between lists it as running or as a result.
        spooled = asyncio.ensure_future(asyncio.to_thread(self._spool.put, exit_))
        self._spooling[command_id] = spooled
        connection = self._connection()
        sent = await self._send(exit_)
        try:
            await spooled
        except OSError as exc:
            bound.error("agent.spool_failed", error=str(exc), hint="free disk space in the state directory")
        finally:
            self._running.pop(command_id, None)
            self._spooling.pop(command_id, None)
        if not sent or self._connection() is not connection:
            # The connection changed while it was being spooled: report it on the new one (once the controller
            # has it, a second report is only acknowledged).
            await self._send(exit_)

    async def on_cancel(self, message: Message) -> None:
        assert isinstance(message, Cancel)
        event = self._running.get(message.command_id)
        if event is None:
            log.info("agent.cancel_unknown", command_id=message.command_id)
            return
        log.info("agent.command_cancelled", command_id=message.command_id)
        event.set()

    async def on_ack(self, message: Message) -> None:
        assert isinstance(message, Ack)
        command_id = message.command_id
        spooling = self._spooling.get(command_id)
        if spooling is not None and not spooling.done():
            # Acknowledged before its spool file was written: forget it once it is, not before.
            spooling.add_done_callback(lambda _done: self._forget(command_id))
            return
        self._forget(command_id)

    def _forget(self, command_id: str) -> None:
        with contextlib.suppress(OSError):
            self._spool.ack(command_id)
