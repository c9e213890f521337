"""The agent's concurrency limit: how many commands may run at once, and how many may wait for a turn."""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["CommandSlots", "Slot", "SlotsBusy"]


class SlotsBusy(Exception):
    """Refusal when every slot and every queue place is taken; the message is meant for the requester."""


class Slot:
    """A reserved place: ``async with`` it to wait for a free slot and hold it while the command runs."""

    def __init__(self, owner: CommandSlots) -> None:
        self._owner = owner
        self._state = "reserved"  # reserved -> running -> done

    async def __aenter__(self) -> Slot:
        if self._state != "reserved":
            raise RuntimeError("a Slot can be entered once")
        try:
            await self._owner._semaphore.acquire()
        except BaseException:
            self._owner._reserved -= 1
            self._state = "done"
            raise
        self._state = "running"
        self._owner._running += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """Give the place back (idempotent). Called by ``__aexit__``; call it yourself if you never enter."""
        if self._state == "running":
            self._owner._running -= 1
            self._owner._semaphore.release()
        if self._state != "done":
            self._owner._reserved -= 1
        self._state = "done"


class CommandSlots:
    """At most ``limit`` commands run at once; up to ``queue`` more wait; beyond that, ``reserve`` refuses at once.

    Usage::

        try:
            slot = slots.reserve()          # never blocks
        except SlotsBusy as busy:
            refuse(str(busy))
        else:
            async with slot:                 # waits for a turn if all slots are running
                result = await run(spec)
    """

    def __init__(self, limit: int, *, queue: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit must be at least 1, got {limit}")
        if queue < 0:
            raise ValueError(f"queue length must be zero or more, got {queue}")
        self.limit = limit
        self.queue = queue
        self._semaphore = asyncio.Semaphore(limit)
        self._reserved = 0  # running + waiting
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._reserved - self._running

    def reserve(self) -> Slot:
        """Take a place now or raise SlotsBusy ("busy: N commands already running …") without waiting."""
        if self._reserved >= self.limit + self.queue:
            queued = f", {self.waiting} waiting" if self.queue else ""
            raise SlotsBusy(
                f"busy: {self._running} commands already running on this agent (limit {self.limit}{queued}); "
                "try again when one finishes or cancel one"
            )
        self._reserved += 1
        return Slot(self)
