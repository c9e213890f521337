"""Commands from chat: submit through the pipeline, then show the output in ONE message that is edited as
output arrives (the outbox coalesces to <= 1 edit/s) and finally states exit code, duration, truncation.
Output longer than the platform's message limit also goes as a file; the message keeps the tail.

The agent hub exposes no progress subscription, so the watcher reads the command row (which the hub
updates as output streams in) once per edit interval; that is the same rate the platform allows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from teleops.agent.output import kept_parts
from teleops.chat.base import Capabilities, InboundEvent
from teleops.chat.reply import Replies
from teleops.commands.dispatch import CommandRequest, CommandSender
from teleops.commands.outcome import AwaitingApproval, Denied, Dispatched, NeedsCode, NotRun
from teleops.commands.read_access import ReadAccess, Reader
from teleops.commands.stepup import CodeGate
from teleops.commands.submit import submit
from teleops.domain.command import TERMINAL, CommandNotFound, CommandRecord
from teleops.domain.incident import IncidentNotFound
from teleops.domain.message import CodeBlock, Message
from teleops.store.agents import host_candidates, list_agents
from teleops.store.approvals import ApprovalRules
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.commands import get_command
from teleops.store.database import Database, Transaction
from teleops.store.incidents import get_incident
from teleops.store.outbox import OutboxStore, chat_of_row
from teleops.store.outbox_queue import enqueue_edit, enqueue_file

__all__ = ["CommandEnds", "CommandRunner", "StepUpDialog", "output_file_caption"]

log = structlog.get_logger(__name__)


class StepUpDialog(Protocol):
    """What the runner hands a command to when it needs a one-time code or a second person (chat/access.py
    `AccessDialog` implements it; declared here so that neither module imports the other)."""

    @property
    def checkpoints(self) -> CheckpointLog | None: ...

    @property
    def approval_rules(self) -> ApprovalRules | None: ...

    def gate(self, code: str | None, *, via: str) -> CodeGate | None: ...

    async def ask_code(
        self, event: InboundEvent, request: CommandRequest, needs: NeedsCode, gate: CodeGate | None
    ) -> None: ...

    async def ask_approval(self, event: InboundEvent, waiting: AwaitingApproval) -> None: ...


class CommandEnds(Protocol):
    """How the runner learns that a command ended without polling (the agent hub's CommandProgress)."""

    def waiter(self, command_id: int) -> Any: ...

    def release(self, command_id: int) -> None: ...

    async def wait(self, finished: Any, timeout_s: float) -> CommandRecord | None: ...


# A command that ends this soon after it was dispatched is shown once, finished, instead of a "running…" message
# and an edit: chats allow about one message a second, so the edit would come a second later.
QUICK_RESULT_S = 0.5


class CommandRunner:
    def __init__(
        self,
        *,
        db: Database,
        outbox: OutboxStore,
        sender: CommandSender,
        capabilities: Callable[[str], Capabilities],
        clock: Callable[[], datetime],
        wake: Callable[[], None],
        replies: Replies,
        timeout_s: float = 60.0,
        output_cap_bytes: int = 64 * 1024,
        cancel: Callable[[str, int], Awaitable[None]] | None = None,
        ends: CommandEnds | None = None,
    ) -> None:
        self._db = db
        self._ends = ends
        self._outbox = outbox
        self._sender = sender
        self._caps = capabilities
        self._clock = clock
        self._wake = wake
        self._replies = replies
        self._timeout_s = timeout_s
        self._cap = output_cap_bytes
        self._cancel = cancel
        self._watchers: set[asyncio.Task[None]] = set()
        self.access: StepUpDialog | None = None  # 2FA prompts and approvals (set when the controller has them)

    async def stop(self) -> None:
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def hosts(self) -> str:
        agents = await list_agents(self._db)
        if not agents:
            return "No agents have connected yet. Start `teleops agent` on a host."
        return "\n".join(
            f"{a.name} ({a.hostname}) — {'online' if self._sender.is_connected(a.name) else 'offline'}" for a in agents
        )

    async def incident_host(self, incident_id: int) -> str | None:
        try:
            return (await get_incident(self._db, incident_id)).host
        except IncidentNotFound:
            return None

    async def cancel(self, user: str, role: str, text: str) -> str:
        if not text.isdigit():
            return "Usage: /cancel ID (the number shown with the command)."
        try:
            record = await get_command(self._db, int(text))
        except CommandNotFound:
            return f"Command {text} does not exist."
        if not (await ReadAccess(self._db, Reader(user, role)).decide([record]))[record.id].allowed:
            return f"Command {text} does not exist."  # as for a missing one: an id confirms nothing (read_access.py)
        if record.requester != user and role != "admin":
            return f"Command {record.id} was requested by {record.requester}; only they or an admin may cancel it."
        if record.status in TERMINAL:
            return f"Command {record.id} already ended ({record.status})."
        if self._cancel is None:
            return "Cancelling is not available on this server."
        await self._cancel(record.agent_name, record.id)
        return f"Cancel sent to command {record.id}."

    async def run(
        self,
        event: InboundEvent,
        user: str,
        role: str,
        host: str,
        text: str,
        *,
        incident_id: int | None,
        code: str | None = None,
    ) -> None:
        """Submit and start watching. Refusals and errors are told in chat with what to do next; a command that
        needs a one-time code or a second person is handed to the access dialog (which asks for them)."""
        request = CommandRequest(
            requester=user,
            role=role,
            host=host,
            command=text,
            timeout_s=self._timeout_s,
            output_cap_bytes=self._cap,
            incident_id=incident_id,
            platform=event.platform,
            chat_id=event.chat_id,
        )
        access = self.access
        gate = access.gate(code, via=f"{event.platform}:{event.user_id}") if access is not None else None
        agents = await host_candidates(self._db, request.host)
        outcome = await submit(
            self._db,
            self._sender,
            agents,
            request,
            now=self._clock(),
            stepup=gate,
            checkpoints=access.checkpoints if access is not None else None,
            approval=access.approval_rules if access is not None else None,
        )
        match outcome:
            case Denied(reason):
                await self._say(event, f"Command refused: {reason}", incident_id)
            case NeedsCode(reason) if access is None:
                await self._say(event, f"Command refused: {reason}; 2FA is not available on this server", incident_id)
            case NeedsCode():
                assert access is not None
                await access.ask_code(event, request, outcome, gate)
            case AwaitingApproval():
                if access is not None:
                    await access.ask_approval(event, outcome)
            case NotRun(reason):
                await self._say(event, f"Not run: {reason}", incident_id)
            case Dispatched(record):
                await self.show(
                    event.platform, event.chat_id, record, reply_to=await self._replies.thread_of(event),
                    answers=self._answers(event),
                )  # fmt: skip

    async def show(
        self, platform: str, chat_id: str, record: CommandRecord, *, reply_to: int | None, answers: str | None = None
    ) -> None:
        """Show the command in `chat_id`, in the background: the chat's next update is not held up meanwhile.
        `answers`: the person's message that asked for it, which the output replies to (see `_answers`)."""
        task = asyncio.create_task(
            self._present(platform, chat_id, record, reply_to=reply_to, answers=answers),
            name=f"chat-command-{record.id}",
        )
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _present(
        self, platform: str, chat_id: str, record: CommandRecord, *, reply_to: int | None, answers: str | None
    ) -> None:
        """Its result if it ends within QUICK_RESULT_S (with the output as a file when it is too long for a message),
        else a progress message kept edited until it ends."""
        try:
            ended = await self._ended_within(record, QUICK_RESULT_S)
            if ended is not None:
                final = replace(_final(ended), answers=answers)
                row_id = await self._replies.post(
                    platform, chat_id, final, incident_id=ended.incident_id, reply_to=reply_to
                )
                if self._needs_file(platform, ended):
                    now = self._clock()
                    await self._outbox.run(
                        lambda conn: _enqueue_output_file(conn, platform, ended, row_id, now, self._cap)
                    )
                    self._wake()
                return
            progress = replace(_progress(record), answers=answers)
            row_id = await self._replies.post(
                platform, chat_id, progress, incident_id=record.incident_id, reply_to=reply_to
            )
        except Exception:  # the command runs regardless; its record and timeline still have the result
            log.exception("chat.command_show_failed", command_id=record.id, platform=platform)
            return
        await self._watch(platform, record.id, row_id)

    @property
    def db(self) -> Database:
        return self._db

    async def _say(self, event: InboundEvent, text: str, incident_id: int | None) -> None:
        await self._replies.say(event, text, incident_id)

    def _answers(self, event: InboundEvent) -> str | None:
        """The person's message a command's output replies to, on platforms that reply rather than thread."""
        caps = self._caps(event.platform)
        return event.message_id if caps.replies and not caps.threads else None

    async def _ended_within(self, record: CommandRecord, timeout_s: float) -> CommandRecord | None:
        """The command's final record if it ended (or ends within `timeout_s`), else None."""
        if record.status in TERMINAL:
            return record
        if self._ends is None:
            return None
        finished = self._ends.waiter(record.id)  # before the read: an end in between is not missed
        try:
            current = await get_command(self._db, record.id)
            if current.status in TERMINAL:
                return current
            ended = await self._ends.wait(finished, timeout_s)
            if ended is None:
                current = await get_command(self._db, record.id)
                return current if current.status in TERMINAL else None
            return ended
        finally:
            self._ends.release(record.id)

    async def _watch(self, platform: str, command_id: int, row_id: int) -> None:
        interval = self._caps(platform).rate_limits.edit_interval_s
        finished = self._ends.waiter(command_id) if self._ends is not None else None
        shown = ""
        try:
            while True:
                # Output is shown at the edit rate the platform allows (see the module docstring); the end at once.
                if finished is not None and self._ends is not None:
                    await self._ends.wait(finished, interval)
                else:
                    await asyncio.sleep(interval)
                try:
                    record = await get_command(self._db, command_id)
                except Exception:
                    log.exception("chat.command_watch_failed", command_id=command_id)
                    await asyncio.sleep(interval)  # once ended, `wait` returns at once: never spin on a failing read
                    continue
                done = record.status in TERMINAL
                if record.output != shown or done:
                    shown = record.output
                    await self._edit(platform, row_id, record, final=done)
                if done:
                    return
        finally:
            if finished is not None and self._ends is not None:
                self._ends.release(command_id)

    async def _edit(self, platform: str, row_id: int, record: CommandRecord, *, final: bool) -> None:
        message = _final(record) if final else _progress(record)
        with_file = final and self._needs_file(platform, record)
        now = self._clock()

        def apply(conn: Transaction) -> None:
            enqueue_edit(conn, ref_id=row_id, payload={"message": message.to_json()}, now=now)
            if with_file:  # same transaction: the file follows the final edit in the chat's order
                _enqueue_output_file(conn, platform, record, row_id, now, self._cap)

        await self._outbox.run(apply)
        self._wake()

    def _needs_file(self, platform: str, record: CommandRecord) -> bool:
        """The output is too long for a message (which keeps its tail) and the platform takes files."""
        caps = self._caps(platform)
        return caps.files and len(record.output) > caps.max_message_length - 512


def _enqueue_output_file(
    conn: Transaction, platform: str, record: CommandRecord, message_row: int, now: datetime, cap_bytes: int
) -> None:
    """The stored output as a file, answering the command's message (outbox row `message_row`)."""
    enqueue_file(
        conn,
        platform=platform,
        chat_id=chat_of_row(conn, message_row),
        filename=f"command-{record.id}-output.txt",
        content=record.output,
        caption=Message(body=output_file_caption(record, cap_bytes), command_id=record.id).to_json(),
        now=now,
        incident_id=record.incident_id,
        reply_to=message_row,
    )


def output_file_caption(record: CommandRecord, cap_bytes: int) -> str:
    """What the output file of `record` holds: all the command printed, or which part of it.

    `cap_bytes` is the output cap commands are sent with: of longer output the agent keeps that many bytes, its
    start and its end (agent/output.py), and reports how many it printed in all (`output_bytes`).
    """
    total = record.output_bytes
    if total == 0:  # no result came from the agent (lost, or killed by a shutdown): only what streamed before
        return f"Output of command {record.id} received before it ended ({record.status}); the rest is not known"
    if not record.truncated:
        return f"Full output of command {record.id} ({total:,} bytes)"
    head, tail = kept_parts(cap_bytes)
    if head + tail >= total:  # the cap was raised after the command ran: the sizes kept are not known here
        return f"Output of command {record.id}: the start and the end of its {total:,} bytes; the middle was cut"
    return (
        f"Output of command {record.id}: the first {head:,} and the last {tail:,} of {total:,} bytes; "
        f"the {total - head - tail:,} between them were cut"
    )


def _header(record: CommandRecord) -> str:
    return f"{record.host} $ {' '.join(record.argv)}"


def _progress(record: CommandRecord) -> Message:
    return Message(
        title=_header(record),
        code=(CodeBlock(record.output),) if record.output else (),
        status=f"command {record.id} · {record.status}…",
        command_id=record.id,
    )


def _final(record: CommandRecord) -> Message:
    parts = [record.status]
    if record.exit_code is not None:
        parts.append(f"exit {record.exit_code}")
    if record.duration_s is not None:
        parts.append(f"{record.duration_s:.1f} s")
    if record.truncated:
        parts.append(f"output truncated ({record.output_bytes:,} bytes in all)")
    if record.reason:
        parts.append(record.reason)
    return Message(
        title=_header(record),
        code=(CodeBlock(record.output or "(no output)"),),
        status=f"command {record.id} · " + " · ".join(parts),
        command_id=record.id,
    )
