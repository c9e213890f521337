"""The delivery worker: one task per platform turns outbox rows into platform calls, politely.

Rules it keeps (ARCHITECTURE §2, THREATS F01/F02/F04):
- per-chat order: only the oldest live row of a chat is ever in flight;
- rate limits from `Capabilities.rate_limits` (per chat, per group per minute, global per second),
  and edits of one message at most once per `edit_interval_s` (pending edits coalesce meanwhile);
- a 429 blocks that chat for exactly `retry_after` seconds; other failures back off exponentially
  with jitter; "can't parse entities" is resent at once as plain text (`render_fallback_total`);
- woken in-process by `wake()` right after a commit, never by polling; a row is read and claimed while the
  commit that wrote it may still be waiting for its fsync, and the platform call waits for that fsync
  (`OutboxStore.wait_durable`), so nothing is announced that a power loss could take back.

One worker per platform means a slow platform only ever delays itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from teleops.chat.base import DeliveryRefused, Gateway, MarkupRejected, RetryLater
from teleops.chat.render import Message, Rendered, render
from teleops.store.database import StorageUnavailable
from teleops.store.outbox import OutboxKind, OutboxRow, OutboxStatus, OutboxStore

__all__ = ["OutboxWorker"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_IN_FLIGHT = 64


class _Window:
    """Timestamps of recent requests in a sliding window; says when the next one is allowed."""

    def __init__(self, limit: int, span_s: float) -> None:
        self.limit = limit
        self.span_s = span_s
        self.times: deque[float] = deque()

    def ready_at(self, now: float) -> float:
        while self.times and self.times[0] <= now - self.span_s:
            self.times.popleft()
        if len(self.times) < self.limit:
            return now
        return self.times[0] + self.span_s

    def record(self, now: float) -> None:
        self.times.append(now)


class OutboxWorker:
    """Delivers the outbox rows of one platform through its gateway. `start`, `wake`, `stop`."""

    def __init__(
        self,
        store: OutboxStore,
        gateway: Gateway,
        *,
        clock: Callable[[], datetime],
        on_fallback: Callable[[str], None] = lambda _platform: None,
        on_delivered: Callable[[OutboxRow], None] = lambda _row: None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._caps = gateway.capabilities
        self._platform = self._caps.platform
        self._clock = clock
        self._on_fallback = on_fallback
        self._on_delivered = on_delivered
        self._now = monotonic
        self._rng = rng or random.Random()
        limits = self._caps.rate_limits
        self._global = _Window(max(int(limits.global_per_second), 1), 1.0)
        self._chat_ready: dict[str, float] = {}
        self._groups: dict[str, _Window] = {}
        self._last_edit: dict[int, float] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def platform(self) -> str:
        return self._platform

    def wake(self) -> None:
        """New rows were committed: look now (cheap; safe to call from any coroutine of this loop)."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self._platform}")

    async def stop(self) -> None:
        """Stop delivering. Rows in flight stay `sending` and are retried by the next start."""
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._in_flight.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._dispatch_ready()
            except Exception:  # the database hiccupped: keep the loop, look again shortly
                log.exception("outbox.scan_failed", platform=self._platform)
                delay = 1.0
            if delay is None:
                await self._wake.wait()
            else:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that races a wake-up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(delay, 0.001)):
                        await self._wake.wait()

    async def _dispatch_ready(self) -> float | None:
        """Start a delivery for every chat whose head row may go now; returns seconds until the next one may."""
        heads = await self._store.heads(self._platform)
        durable_mark = self._store.durable_mark()
        now = self._now()
        next_at = math.inf
        for row in heads:
            if row.chat_id in self._in_flight:
                continue
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                break
            ready = self._ready_at(row, now)
            if ready > now:
                next_at = min(next_at, ready)
                continue
            global_ready = self._global.ready_at(now)
            if global_ready > now:
                next_at = min(next_at, global_ready)
                break
            self._global.record(now)
            self._chat_ready[row.chat_id] = now + self._caps.rate_limits.per_chat_interval_s
            task = asyncio.create_task(self._deliver(row, durable_mark), name=f"outbox-{self._platform}-{row.id}")
            self._in_flight[row.chat_id] = task
            task.add_done_callback(self._finisher(row.chat_id))
        return None if math.isinf(next_at) else next_at - now

    def _spaced_after_call(self, row: OutboxRow) -> None:
        """Count the chat's interval (and its group window) from when the platform answered, not from when the
        delivery began: the claim before the call takes a variable time, and the platform counts arrivals."""
        now = self._now()
        chat = row.chat_id
        self._chat_ready[chat] = max(self._chat_ready.get(chat, now), now + self._caps.rate_limits.per_chat_interval_s)
        if row.kind != OutboxKind.EDIT and self._is_group(chat):
            self._group(chat).record(now)

    def _finisher(self, chat_id: str) -> Callable[[asyncio.Task[None]], None]:
        def finished(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(chat_id, None)
            self._wake.set()

        return finished

    def _is_group(self, chat_id: str) -> bool:
        limits = self._caps.rate_limits
        return limits.per_group_per_minute is not None and chat_id.startswith(limits.group_chat_prefix)

    def _group(self, chat_id: str) -> _Window:
        window = self._groups.get(chat_id)
        if window is None:
            window = self._groups[chat_id] = _Window(self._caps.rate_limits.per_group_per_minute or 1, 60.0)
        return window

    def _ready_at(self, row: OutboxRow, now: float) -> float:
        ready = self._chat_ready.get(row.chat_id, now)
        if row.kind == OutboxKind.EDIT and row.ref_id is not None:
            last = self._last_edit.get(row.ref_id)
            if last is not None:
                ready = max(ready, last + self._caps.rate_limits.edit_interval_s)
        elif self._is_group(row.chat_id):
            ready = max(ready, self._group(row.chat_id).ready_at(now))
        return ready

    async def _deliver(self, row: OutboxRow, durable_mark: int) -> None:
        log_ = log.bind(platform=self._platform, outbox_id=row.id, kind=row.kind)
        # Committed *before* the call. If we die after the platform accepted the message but before
        # mark_sent commits, the row is still `sending` at the next start and is sent again: a
        # duplicate is possible only in that window and only for new messages, because the Bot API
        # gives no idempotency key for sendMessage (edits are idempotent: same text twice is a no-op).
        if not await self._store.claim(row.id, self._clock()):
            return
        try:
            await self._store.wait_durable(durable_mark)
        except StorageUnavailable as exc:  # the row may not survive a power loss: do not announce it yet
            log_.warning("outbox.not_durable", error=str(exc))
            self._chat_ready[row.chat_id] = max(self._chat_ready.get(row.chat_id, 0.0), self._now() + BACKOFF_BASE_S)
            return
        try:
            try:
                message_id = await self._call(row)
            finally:
                self._spaced_after_call(row)
        except RetryLater as exc:
            await self._retry(row, str(exc), exc.retry_after, log_)
            return
        except DeliveryRefused as exc:
            log_.warning("outbox.refused", error=str(exc))
            await self._store.mark_failed(row.id, str(exc))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a gateway bug must not lose the row: retry with backoff
            log_.exception("outbox.gateway_error")
            await self._retry(row, f"{type(exc).__name__}: {exc}", None, log_)
            return
        stamp = self._now()
        if row.kind == OutboxKind.EDIT and row.ref_id is not None:
            self._last_edit[row.ref_id] = stamp
        else:
            self._last_edit[row.id] = stamp
        await self._record_sent(row, message_id)
        self._on_delivered(row)

    async def _record_sent(self, row: OutboxRow, message_id: str | None) -> None:
        # The platform has the message: giving up here would resend it, so insist until the database answers.
        delay = 0.05
        while True:
            try:
                await self._store.mark_sent(row.id, message_id, self._clock())
                return
            except Exception:
                log.exception("outbox.mark_sent_failed", platform=self._platform, outbox_id=row.id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _retry(self, row: OutboxRow, error: str, retry_after: float | None, log_: structlog.BoundLogger) -> None:
        if retry_after is not None:
            # Exactly what the platform asked for, never sooner, for every request to this chat.
            delay = float(retry_after)
        else:
            ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(row.attempts, 0))
            delay = ceiling * (0.5 + self._rng.random() / 2)  # "equal jitter": spread retries, keep a floor
        self._chat_ready[row.chat_id] = max(self._chat_ready.get(row.chat_id, 0.0), self._now() + delay)
        log_.info("outbox.retry", error=error, delay_s=round(delay, 3), attempt=row.attempts + 1)
        await self._store.mark_retry(row.id, error, self._clock() + timedelta(seconds=delay))

    async def _call(self, row: OutboxRow) -> str | None:
        """One platform request (two when the markup is rejected). Returns the platform message id."""
        raw = row.payload.get("message")
        message = Message.from_json(raw) if raw else None
        if row.kind == OutboxKind.EDIT:
            if row.ref_status == OutboxStatus.FAILED or row.ref_status is None:
                raise DeliveryRefused("the message to edit was never delivered")
            if row.ref_message_id is None:
                raise RetryLater("the message to edit has no platform id yet")
            assert message is not None
            rendered = render(message, self._caps)
            await self._with_fallback(lambda r: self._gateway.edit(row.chat_id, row.ref_message_id or "", r), rendered)
            return row.ref_message_id
        reply_to = row.ref_message_id if row.ref_status == OutboxStatus.SENT else None
        if row.kind == OutboxKind.FILE:
            file = row.payload["file"]
            caption = render(message, self._caps) if message is not None else None
            content = str(file["text"]).encode()
            if caption is None:
                return await self._gateway.send_file(row.chat_id, str(file["name"]), content, reply_to=reply_to)
            return await self._with_fallback(
                lambda r: self._gateway.send_file(
                    row.chat_id, str(file["name"]), content, caption=r, reply_to=reply_to
                ),
                caption,
            )
        assert message is not None
        rendered = render(message, self._caps)
        return await self._with_fallback(lambda r: self._gateway.send(row.chat_id, r, reply_to=reply_to), rendered)

    async def _with_fallback(self, call: Callable[[Rendered], Awaitable[T]], rendered: Rendered) -> T:
        try:
            return await call(rendered)
        except MarkupRejected:
            # Never lose a message to an escaping bug: the plain twin carries the same words.
            self._on_fallback(self._platform)
            log.warning("outbox.render_fallback", platform=self._platform)
            return await call(rendered.as_plain())
