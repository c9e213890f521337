"""The delivery worker: one task per platform turns outbox rows into platform calls, politely.

Rules it keeps (docs/architecture.md, "Invariants" 1; docs/threat-model.md F01/F02/F04):
- per-chat order: only the oldest live row of a chat is ever in flight;
- rate limits from `Capabilities.rate_limits` (per chat, per group per minute, global per second),
  and edits of one message at most once per `edit_interval_s` (pending edits coalesce meanwhile);
- a 429 blocks that chat for exactly `retry_after` seconds, and the deadline is kept on the row
  (`blocked_until`), so a controller restarted meanwhile still waits for it (on the wall clock; the worker that
  got the 429 counts it on the monotonic clock); other failures back off
  exponentially with jitter; "can't parse entities" is resent at once as plain text (`render_fallback_total`);
- woken in-process by `wake()` right after a commit, never by polling. Each message is a `Delivery` from the
  store: take it (`next_deliveries`, or `handed_over` for an announcement its own transaction claimed), claim
  it, render it, wait until the store says it may go (`ready`: its commit is durable, store/outbox_delivery.py),
  send it, tell the store the result (`sent`, `retry`, `failed`). Rendering overlaps the fsync, so a new incident's
  announcement goes the moment the fsync ends (docs/benchmarks.md, B3).

One worker per platform means a slow platform only ever delays itself.

At least once, never lost: a row is claimed (`sending`) before its platform call and marked `sent` right after the
platform's answer. The one window in which a message can be posted twice is between the platform accepting it and
the commit of `Delivery.sent`: a kill -9 there (or an answer lost to a timeout) leaves the row `sending`, and the next
start sends it again, because neither the Bot API nor Slack's chat.postMessage takes an idempotency key. That window
is kept to one HTTP answer plus one commit: nothing else runs between the answer and `Delivery.sent`, which does not
wait for its fsync (a process crash keeps a commit). Edits are idempotent (the same text twice is a no-op).

Several replicas on one PostgreSQL (issue #23): each runs this worker for each platform. A claim holds its row under
a lease (`database.work_lease`, store/outbox_delivery.py) the worker renews every third of it while the row is in
flight, so a replica that dies or freezes hands its rows over within one lease; a head another replica holds is
skipped, and, since rows queued by another replica wake only that replica, the worker also looks every
SHARED_POLL_S. A replica frozen past
its lease does not make the platform call when it wakes (`Delivery.holds_lease`), and its late outcome is refused
(fenced by the claim's epoch). The one further duplicate replicas add is a freeze *during* the platform call for
longer than the lease: the row is taken over and sent again (at least once, as for a kill -9 in that window).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from teleops.chat.base import DeliveryRefused, Gateway, MarkupRejected, Rendered, RetryLater, TokenRejected
from teleops.chat.delivery_health import DeliveryHealth
from teleops.chat.render import render
from teleops.domain.message import Message
from teleops.store.database import StorageUnavailable
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_delivery import Delivery
from teleops.store.outbox_queue import OutboxKind, OutboxRow, OutboxStatus

__all__ = ["OutboxWorker"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
MAX_IN_FLIGHT = 64
# Several replicas (PostgreSQL): how often the worker looks for rows it was not woken for (queued by another
# replica, or left behind by one that died). The leases of rows in flight are renewed every third of the work lease.
SHARED_POLL_S = 1.0


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
        on_refused: Callable[[OutboxRow, str], None] = lambda _row, _reason: None,
        health: DeliveryHealth | None = None,
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
        self._on_refused = on_refused
        self._health = health or DeliveryHealth()
        self._now = monotonic
        self._rng = rng or random.Random()
        limits = self._caps.rate_limits
        self._global = _Window(max(int(limits.global_per_second), 1), 1.0)
        self._chat_ready: dict[str, float] = {}
        self._groups: dict[str, _Window] = {}
        self._last_edit: dict[int, float] = {}
        # Rows this worker blocked itself after a 429 (row id -> the deadline it stored): it counts their wait on the
        # monotonic clock (`_chat_ready`); a deadline it did not write (before a restart, another replica) is
        # counted on the wall clock, the only one shared across processes.
        self._own_blocks: dict[int, datetime] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._claims: dict[str, Delivery] = {}  # chat -> the delivery in flight there (its lease is renewed)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def platform(self) -> str:
        return self._platform

    @property
    def running(self) -> bool:
        """Its delivery loop is started and has not died (the self-test checks this, server/selfwatch)."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """New rows were committed: look now (cheap; safe to call from any coroutine of this loop)."""
        self._wake.set()

    def _take_handed_over(self) -> None:
        """Rows were handed over (`OutboxStore.hand_over`, right after their commit): start each one its chat and
        the rate limits allow now; the others are found by the next read, like any live row."""
        now = self._now()
        for delivery in self._store.handed_over(self._platform):
            row = delivery.row
            if (
                row.chat_id in self._in_flight
                or len(self._in_flight) >= MAX_IN_FLIGHT
                or self._ready_at(row, now) > now
                or self._global.ready_at(now) > now
            ):
                self.wake()
                continue
            self._start(delivery, now)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self._platform}")
            self._store.listen(self._platform, self._take_handed_over)
            if self._store.shared:
                self._renewer = asyncio.create_task(self._renew_leases(), name=f"outbox-{self._platform}-leases")

    async def stop(self) -> None:
        """Stop delivering. Rows in flight stay `sending` and are retried by the next start."""
        self._store.listen(self._platform, None)  # rows handed over meanwhile are found by the next start
        tasks = [t for t in (self._task, self._renewer, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._renewer = None
        self._in_flight.clear()
        self._claims.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._dispatch_ready()
            except Exception:  # the database hiccupped: keep the loop, look again shortly
                log.exception("outbox.scan_failed", platform=self._platform)
                delay = 1.0
            if self._store.shared:  # other replicas queue rows too, and may leave some behind
                delay = SHARED_POLL_S if delay is None else min(delay, SHARED_POLL_S)
            if delay is None:
                await self._wake.wait()
            else:
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that races a wake-up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(delay, 0.001)):
                        await self._wake.wait()

    async def _dispatch_ready(self) -> float | None:
        """Start a delivery for every chat whose head row may go now; returns seconds until the next one may."""
        deliveries = await self._store.next_deliveries(self._platform)
        now = self._now()
        next_at = math.inf
        for delivery in deliveries:
            row = delivery.row
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
            self._start(delivery, now)
        return None if math.isinf(next_at) else next_at - now

    def _start(self, delivery: Delivery, now: float) -> None:
        row = delivery.row
        self._global.record(now)
        self._chat_ready[row.chat_id] = now + self._caps.rate_limits.per_chat_interval_s
        task = asyncio.create_task(self._deliver(delivery), name=f"outbox-{self._platform}-{row.id}")
        self._in_flight[row.chat_id] = task
        self._claims[row.chat_id] = delivery
        task.add_done_callback(self._finisher(row.chat_id))

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
            self._claims.pop(chat_id, None)
            self._wake.set()

        return finished

    async def _renew_leases(self) -> None:
        """Several replicas: keep the claims of the rows in flight (a platform call may outlast one lease). A row
        whose claim was lost meanwhile (this process stalled) keeps going only to have its outcome refused."""
        while True:
            await asyncio.sleep(self._store.work_lease.total_seconds() / 3)
            deliveries = [d for d in self._claims.values() if d.in_flight]
            if not deliveries:
                continue
            started = time.monotonic()
            try:
                held = await self._store.renew([(d.row.id, d.epoch) for d in deliveries])
            except Exception as exc:  # the database hiccupped: the leases run on, renewed next time if they can
                log.warning("outbox.lease_renewal_failed", platform=self._platform, error=str(exc))
                continue
            for delivery in deliveries:
                if delivery.row.id in held:
                    delivery.renewed(started)
                elif delivery.in_flight:  # not ended by its own outcome meanwhile: taken over
                    log.warning("outbox.lease_lost", platform=self._platform, outbox_id=delivery.row.id)

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
        if row.blocked_until is not None and self._own_blocks.get(row.id) != row.blocked_until:
            # The platform's own deadline from a 429, read back from the row: it outlives the process that got it.
            wait_s = (row.blocked_until - self._clock()).total_seconds()
            if wait_s > 0:
                ready = max(ready, now + wait_s)
        return ready

    async def _deliver(self, delivery: Delivery) -> None:
        """Take the message, render it, wait until the store says it may go, send it, tell the store the result."""
        log_ = log.bind(platform=self._platform, outbox_id=delivery.row.id, kind=delivery.row.kind)
        # Claimed *before* the call. If we die after the platform accepted the message but before
        # `sent` commits, the row is still `sending` at the next start and is sent again: the
        # at-least-once window (module docstring), only for new messages.
        if not await delivery.claim(self._clock()):
            return
        row = delivery.row  # as claimed: what the row says now, not when it was read
        try:
            request = self._prepare(row)  # rendered while the fsync of the row's commit may still run
        except Exception as exc:
            await self._failed(delivery, exc, log_)
            return
        try:
            await delivery.ready()
        except StorageUnavailable as exc:  # the row may not survive a power loss: do not announce it yet
            log_.warning("outbox.not_durable", error=str(exc))
            self._chat_ready[row.chat_id] = max(self._chat_ready.get(row.chat_id, 0.0), self._now() + BACKOFF_BASE_S)
            return
        if not delivery.holds_lease():
            # This process stalled past the claim's lease (SIGSTOP, a blocked loop): another replica may be sending
            # the row now. Not calling the platform is what keeps it from being posted twice.
            log_.warning("outbox.lease_expired_before_send", hint="left to whichever replica claims it next")
            return
        try:
            try:
                message_id = await request()
            finally:
                self._spaced_after_call(row)
        except Exception as exc:
            await self._failed(delivery, exc, log_)
            return
        stamp = self._now()
        if row.kind == OutboxKind.EDIT and row.ref_id is not None:
            self._last_edit[row.ref_id] = stamp
        else:
            self._last_edit[row.id] = stamp
        await self._record_sent(delivery, message_id)
        self._own_blocks.pop(row.id, None)
        self._health.delivered(self._platform)
        self._on_delivered(row)

    async def _failed(self, delivery: Delivery, exc: Exception, log_: structlog.BoundLogger) -> None:
        """The row could not go: retry later (temporary, or a gateway bug must not lose it) or fail it for good."""
        row = delivery.row
        if isinstance(exc, RetryLater):
            await self._retry(delivery, str(exc), exc.retry_after, log_)
        elif isinstance(exc, DeliveryRefused):
            log_.warning("outbox.refused", error=str(exc))
            self._own_blocks.pop(row.id, None)
            if isinstance(exc, TokenRejected):
                self._health.token_rejected(self._platform, str(exc))
            await delivery.failed(str(exc))
            self._on_refused(row, str(exc))
        else:
            log_.error("outbox.gateway_error", exc_info=exc)
            await self._retry(delivery, f"{type(exc).__name__}: {exc}", None, log_)

    async def _record_sent(self, delivery: Delivery, message_id: str | None) -> None:
        # The platform has the message: giving up here would resend it, so insist until the database answers.
        delay = 0.05
        while True:
            try:
                await delivery.sent(message_id, self._clock())
                return
            except Exception:
                log.exception("outbox.mark_sent_failed", platform=self._platform, outbox_id=delivery.row.id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _retry(
        self, delivery: Delivery, error: str, retry_after: float | None, log_: structlog.BoundLogger
    ) -> None:
        row = delivery.row
        if retry_after is not None:
            # Exactly what the platform asked for, never sooner, for every request to this chat.
            delay = float(retry_after)
        else:
            ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(row.attempts, 0))
            delay = ceiling * (0.5 + self._rng.random() / 2)  # "equal jitter": spread retries, keep a floor
        self._chat_ready[row.chat_id] = max(self._chat_ready.get(row.chat_id, 0.0), self._now() + delay)
        log_.info("outbox.retry", error=error, delay_s=round(delay, 3), attempt=row.attempts + 1)
        due = self._clock() + timedelta(seconds=delay)
        blocked_until = due if retry_after is not None else None
        if blocked_until is not None:
            self._own_blocks[row.id] = blocked_until
        await delivery.retry(error, due, blocked_until=blocked_until)

    def _prepare(self, row: OutboxRow) -> Callable[[], Awaitable[str | None]]:
        """Render `row`; returns its platform request (two when the markup is rejected), which answers the platform
        message id. Raises DeliveryRefused or RetryLater when an edit's message cannot be edited (yet)."""
        raw = row.payload.get("message")
        message = Message.from_json(raw) if raw else None
        if row.kind == OutboxKind.EDIT:
            if not self._caps.edits:
                # A platform that cannot edit (email, push, webhooks: chat/contact/): the edit is done by doing
                # nothing, rather than a second message per change of an incident's state.
                return lambda: _unchanged(row.ref_message_id)
            if row.ref_status == OutboxStatus.FAILED or row.ref_status is None:
                raise DeliveryRefused("the message to edit was never delivered")
            if row.ref_message_id is None:
                raise RetryLater("the message to edit has no platform id yet")
            assert message is not None
            message_id = row.ref_message_id
            edited = render(message, self._caps)

            async def edit() -> str | None:
                await self._with_fallback(lambda r: self._gateway.edit(row.chat_id, message_id, r), edited)
                return message_id

            return edit
        # A thread (the outbox row this answers) on Slack; else the person's own message, when it names one.
        reply_to = row.ref_message_id if row.ref_status == OutboxStatus.SENT else None
        if reply_to is None and message is not None:
            reply_to = message.answers
        if row.kind == OutboxKind.FILE:
            file = row.payload["file"]
            name, content = str(file["name"]), str(file["text"]).encode()
            caption = self._render(message, row) if message is not None else None
            if caption is None:
                return lambda: self._gateway.send_file(row.chat_id, name, content, reply_to=reply_to)
            return lambda: self._with_fallback(
                lambda r: self._gateway.send_file(row.chat_id, name, content, caption=r, reply_to=reply_to), caption
            )
        assert message is not None
        rendered = self._render(message, row)
        return lambda: self._with_fallback(lambda r: self._gateway.send(row.chat_id, r, reply_to=reply_to), rendered)

    def _render(self, message: Message, row: OutboxRow) -> Rendered:
        """A new message of `row`, with the incident it is about (an edit keeps its message's)."""
        return replace(render(message, self._caps), incident_id=row.incident_id)

    async def _with_fallback(self, call: Callable[[Rendered], Awaitable[T]], rendered: Rendered) -> T:
        try:
            return await call(rendered)
        except MarkupRejected:
            # Never lose a message to an escaping bug: the plain twin carries the same words.
            self._on_fallback(self._platform)
            log.warning("outbox.render_fallback", platform=self._platform)
            return await call(rendered.as_plain())


async def _unchanged(message_id: str | None) -> str | None:
    """The "edit" of a platform without edits: nothing is sent; the edited message keeps its id."""
    return message_id
