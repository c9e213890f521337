"""Agentless execution over SSH (asyncssh), with the agent's semantics: argv (quoted, never re-parsed by us),
timeout that kills the remote process group (exit 124), head + tail capped output, 128+N for signal N.

Host keys are always verified against the configured known_hosts file: an unknown or changed key is an
error, never accepted (no trust on first use). Only the configured key file authenticates; no ssh-agent,
no ~/.ssh/config. The remote command is `timeout -k GRACE TIMEOUT argv…` (coreutils), which puts the command
in its own process group and signals the whole group, so grandchildren die with it; a local deadline of
timeout + grace + a margin closes the connection if the remote side still does not stop.
"""

from __future__ import annotations

import asyncio
import codecs
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import structlog

from teleops.agent.output import CappedOutput
from teleops.commands.backend.exit_report import finish_of_exit
from teleops.commands.dispatch import AgentUnavailable
from teleops.config.settings import HostSettings
from teleops.domain.clock import Clock
from teleops.domain.command import CommandStatus, Finish
from teleops.store.commands import append_output, finish_command, mark_started
from teleops.store.database import Database
from teleops.wire import Exec, Exit
from teleops.wire.command_ids import row_id_of

__all__ = ["SshHosts", "SshResult", "SshTarget", "SshUnavailable", "run_over_ssh"]

log = structlog.get_logger(__name__)

EXIT_TIMEOUT = 124
_MARGIN_S = 5.0
_CHUNK = 65536

OutputSink = Callable[[bytes], Awaitable[None]]


class SshUnavailable(Exception):
    """Nothing ran: the host could not be reached, its key did not verify, or login failed. Says which."""


@dataclass(frozen=True, slots=True)
class SshTarget:
    address: str  # host or host:port
    user: str
    key_file: Path
    known_hosts: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.address.rpartition(":")
        if sep and port.isdigit() and not host.endswith(":"):
            return host.strip("[]"), int(port)
        return self.address.strip("[]"), 22


@dataclass(frozen=True, slots=True)
class SshResult:
    exit_code: int
    signal: int | None
    timed_out: bool
    truncated: bool
    output: bytes
    output_bytes: int
    duration_s: float


async def run_over_ssh(
    target: SshTarget,
    argv: Sequence[str],
    *,
    timeout_s: float,
    kill_grace_s: float = 3.0,
    output_cap_bytes: int = 64 * 1024,
    on_output: OutputSink | None = None,
) -> SshResult:
    """Run argv on the target. Raises SshUnavailable when nothing could run (the message says what to fix)."""
    if not argv:
        raise ValueError("argv is empty")
    host, port = target.host_port
    remote = shlex.join(["timeout", "-k", f"{kill_grace_s:g}", "--", f"{timeout_s:g}", *argv])
    started = time.monotonic()
    try:
        connection = await asyncio.wait_for(
            asyncssh.connect(
                host,
                port=port,
                username=target.user,
                client_keys=[str(target.key_file)],
                known_hosts=str(target.known_hosts),
                agent_path=None,
                config=[],
                preferred_auth="publickey",
            ),
            timeout=15,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise SshUnavailable(
            f"host key of {target.address} is not in {target.known_hosts} (or changed): {exc.reason}; "
            "verify the key out of band and add it there — it is never accepted automatically"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise SshUnavailable(
            f"{target.user}@{target.address} refused the key {target.key_file}; add its public key to the "
            "user's authorized_keys"
        ) from exc
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise SshUnavailable(f"cannot reach {target.address} over SSH: {exc}") from exc
    output = CappedOutput(output_cap_bytes)
    timed_out = False
    async with connection:
        process = await connection.create_process(remote, stdin=asyncssh.DEVNULL, stderr=asyncssh.STDOUT, encoding=None)

        async def pump() -> None:
            while chunk := await process.stdout.read(_CHUNK):
                head = output.feed(chunk)
                if head and on_output is not None:
                    try:
                        await on_output(head)
                    except Exception:  # the live view only: the final result still carries the output
                        log.exception("ssh.output_sink_failed")

        try:
            await asyncio.wait_for(asyncio.gather(pump(), process.wait()), timeout_s + kill_grace_s + _MARGIN_S)
        except TimeoutError:
            timed_out = True  # the remote `timeout` did not end it: drop the channel and say so
            process.close()
    duration = time.monotonic() - started
    exit_code, sig = _exit_of(process.exit_status, process.exit_signal)
    if exit_code == EXIT_TIMEOUT or timed_out or (exit_code == 128 + signal.SIGKILL and duration >= timeout_s):
        return SshResult(EXIT_TIMEOUT, None, True, output.truncated, output.value(), output.total, duration)
    return SshResult(exit_code, sig, False, output.truncated, output.value(), output.total, duration)


def _exit_of(status: int | None, exit_signal: tuple[str, bool, str, str] | None) -> tuple[int, int | None]:
    if exit_signal is not None:
        try:
            number = int(signal.Signals["SIG" + exit_signal[0]])
        except KeyError:
            number = int(signal.SIGKILL)
        return 128 + number, number
    if status is None or status < 0:
        return 255, None  # the connection ended without an exit status
    return status, None


class SshHosts:
    """The configured agentless hosts as dispatch targets, with the agent hub's `is_connected`/`send_exec`.

    A sent command runs in a task of this process; its start, streamed output and result are recorded like an
    agent's (the same `Exit` → status mapping). If the controller stops first, the command is left `running`
    and the hub's sweep ends it `lost` after its timeout plus `agents.lost_after`.
    """

    def __init__(
        self,
        hosts: Sequence[HostSettings],
        *,
        db: Database,
        clock: Clock,
        output_cap_bytes: int,
        on_finished: Callable[[int], None] | None = None,
    ) -> None:
        self._hosts = {h.name: h for h in hosts}
        self._db = db
        self._clock = clock
        self._cap = output_cap_bytes
        self._tasks: dict[int, asyncio.Task[None]] = {}  # by command row id
        self._on_finished = on_finished

    @property
    def hosts(self) -> list[HostSettings]:
        return list(self._hosts.values())

    def is_running(self, command_id: int) -> bool:
        return command_id in self._tasks

    def is_connected(self, name: str) -> bool:
        return name in self._hosts

    async def send_exec(self, name: str, message: Exec) -> None:
        host = self._hosts.get(name)
        if host is None:
            raise AgentUnavailable(f"{name} is not a configured SSH host")
        command_id = row_id_of(message.command_id)
        if command_id is None:
            raise AgentUnavailable(f"{message.command_id!r} is not a command id of this controller")
        target = SshTarget(host.ssh.address, host.ssh.user, host.ssh.key_file, host.ssh.known_hosts)
        task = asyncio.create_task(self._run(name, target, command_id, message), name=f"ssh-command-{command_id}")
        self._tasks[command_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(command_id, None))

    def cancel(self, command_id: int) -> bool:
        """Stop waiting and close the channel. The remote `timeout` still bounds the remote process."""
        task = self._tasks.get(command_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, name: str, target: SshTarget, command_id: int, message: Exec) -> None:
        bound = log.bind(command_id=command_id, host=name)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")

        async def on_output(chunk: bytes) -> None:
            text = decoder.decode(chunk)
            if text:
                await append_output(self._db, command_id, text, cap_chars=self._cap)

        await mark_started(self._db, command_id, now=self._clock())
        try:
            result = await run_over_ssh(
                target,
                message.argv,
                timeout_s=message.timeout_s,
                output_cap_bytes=message.output_cap_bytes,
                on_output=on_output,
            )
        except SshUnavailable as exc:
            bound.warning("ssh.unavailable", error=str(exc))
            finish = Finish(CommandStatus.FAILED, reason=f"not run: {exc}")
        except asyncio.CancelledError:
            finish = Finish(CommandStatus.KILLED, reason="cancelled on request; the SSH channel was closed")
            await finish_command(self._db, command_id, finish, now=self._clock())
            raise
        else:
            exit_ = Exit(
                command_id=message.command_id,
                exit_code=result.exit_code,
                signal=result.signal,
                timed_out=result.timed_out,
                truncated=result.truncated,
                output_bytes=result.output_bytes,
                duration_s=result.duration_s,
                output=result.output.decode("utf-8", errors="backslashreplace"),
            )
            finish = finish_of_exit(exit_, agent=name)
        await finish_command(self._db, command_id, finish, now=self._clock())
        if self._on_finished is not None:
            self._on_finished(command_id)
        bound.info("command.finished", status=finish.status.value, exit_code=finish.exit_code, via="ssh")
