"""Progress of running commands between the agent's messages and the database, and waiting for the end.

`started` and streamed output are written at most every FLUSH_AFTER_S instead of one durable transaction per
message: a short command then costs one write for its whole result (the exit carries its start time), and a
chatty one a few writes per second. Callers that want the end wait on `finished()` instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from teleops.domain.command import CommandRecord
from teleops.store.commands import append_output, mark_started
from teleops.store.database import Database, StorageUnavailable

__all__ = ["FLUSH_AFTER_S", "CommandProgress", "Finished"]

log = structlog.get_logger(__name__)

FLUSH_AFTER_S = 0.25


@dataclass(eq=False)
class _Pending:
    started_at: datetime | None = None
    output: list[str] = field(default_factory=list)
    chars: int = 0
    flush: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Finished:
    """What waiters of one command share: set when it ends, with its final record when the ender had it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    record: CommandRecord | None = None


class CommandProgress:
    def __init__(self, db: Database, *, output_cap_chars: int) -> None:
        self._db = db
        self._cap = output_cap_chars
        self._pending: dict[int, _Pending] = {}
        self._waiters: dict[int, Finished] = {}
        self._waiting: dict[int, int] = {}  # how many callers hold each waiter (for `release`)
        # Told of every end recorded here (commands/backend/routing.py wakes the replica that asked for it).
        self.on_finished: Callable[[int], None] | None = None

    def started(self, command_id: int, at: datetime) -> None:
        self._entry(command_id).started_at = at

    def output(self, command_id: int, text: str) -> None:
        entry = self._entry(command_id)
        if entry.chars < self._cap:  # the exit brings the final capped text; the live view needs no more
            entry.output.append(text)
            entry.chars += len(text)

    def started_at(self, command_id: int) -> datetime | None:
        """When the agent said the command started, if that is still pending here (else see the record)."""
        entry = self._pending.get(command_id)
        return entry.started_at if entry is not None else None

    def take_started_at(self, command_id: int) -> datetime | None:
        """The exit is being recorded: drop what is pending (the result replaces it) but keep the start time."""
        entry = self._pending.pop(command_id, None)
        if entry is None:
            return None
        if entry.flush is not None:
            entry.flush.cancel()
        return entry.started_at

    def finished(self, command_id: int, record: CommandRecord | None = None) -> None:
        """Wake whoever waits for this command, handing them its committed final `record` when known."""
        waiter = self._waiters.pop(command_id, None)
        self._waiting.pop(command_id, None)
        if waiter is not None:
            waiter.record = record
            waiter.event.set()
        if self.on_finished is not None:
            self.on_finished(command_id)

    def waited_for(self) -> list[int]:
        """The commands someone here waits for (to wake them when another replica ended one and its wake-up
        was lost)."""
        return list(self._waiters)

    def waiter(self, command_id: int) -> Finished:
        """Set by `finished(command_id)`. Take it *before* reading the command's state, so an end that lands
        between the read and the wait is not missed (a lost wake-up would wait out the timeout)."""
        self._waiting[command_id] = self._waiting.get(command_id, 0) + 1
        return self._waiters.setdefault(command_id, Finished())

    def release(self, command_id: int) -> None:
        """The caller of `waiter` no longer waits (it found the command already ended, or timed out)."""
        left = self._waiting.get(command_id, 0) - 1
        if left > 0:
            self._waiting[command_id] = left
        else:
            self._waiting.pop(command_id, None)
            self._waiters.pop(command_id, None)

    async def wait(self, finished: Finished, timeout_s: float) -> CommandRecord | None:
        """Wait until the command of `finished` (from `waiter`) ends, or `timeout_s` passes. Returns its final
        record when the end came with one (then no read is needed), else None: read the command."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await finished.event.wait()
        return finished.record

    async def flush_all(self) -> None:
        for command_id in list(self._pending):
            await self._flush(command_id)

    def _entry(self, command_id: int) -> _Pending:
        entry = self._pending.get(command_id)
        if entry is None:
            entry = self._pending[command_id] = _Pending()
        if entry.flush is None:
            entry.flush = asyncio.create_task(self._flush_later(command_id))
        return entry

    async def _flush_later(self, command_id: int) -> None:
        await asyncio.sleep(FLUSH_AFTER_S)
        await self._flush(command_id)

    async def _flush(self, command_id: int) -> None:
        entry = self._pending.pop(command_id, None)
        if entry is None:
            return
        try:
            if entry.started_at is not None:
                await mark_started(self._db, command_id, now=entry.started_at)
            if entry.output:
                await append_output(self._db, command_id, "".join(entry.output), cap_chars=self._cap)
        except StorageUnavailable as exc:  # progress only: the exit still records the result
            log.warning("command.progress_not_saved", command_id=command_id, error=str(exc))
