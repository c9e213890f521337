"""The singleton runner: each singleton loop runs in exactly one replica, under a fenced lease (store/leases.py).

For every registered singleton one task either stands by — trying to acquire the lease every `retry_every_s` — or
holds it: it runs the singleton's body (if it has one) and renews the lease every ttl/3. A renewal that fails (the
row is no longer ours with our epoch, it expired by the database clock, or the database did not answer in time)
means the lease is lost: the body is cancelled at once and the task stands by again. A body that raises LeaseLost
(one of its fenced actions found the lease gone) is lost the same way.

Cancelling is not what keeps a stale replica from acting — a replica frozen with SIGSTOP and resumed runs its body
before this task notices anything — every singleton action re-checks the lease in its own transaction for that.
Periodic singletons (housekeeping, the dead-man's-switch pings) have no body: at each tick they ask `held(name)` and
fence their action with the lease it returns.

On a clean stop the leases are released, so another replica takes over at its next try instead of after the TTL
(a rolling restart moves the loops within `retry_every_s`). docs/adr/0012-singletons-under-fenced-leases.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from teleops.server.metrics import Metrics
from teleops.store.database import StorageUnavailable
from teleops.store.leases import Lease, LeaseLost, LeaseStore

__all__ = ["BODY_RESTART_S", "RETRY_EVERY_S", "SingletonBody", "Singletons"]

log = structlog.get_logger(__name__)

RETRY_EVERY_S = 2.0  # how often a standby tries to take a lease: a failover takes at most the TTL plus this
BODY_RESTART_S = 1.0  # a body that crashed (a bug; it is logged) is started again after this, lease kept

# What a singleton does while its lease is held; it runs until cancelled and raises LeaseLost when a fenced action
# finds the lease gone.
SingletonBody = Callable[[Lease], Awaitable[None]]


@dataclass
class _Slot:
    name: str
    body: SingletonBody | None
    lease: Lease | None = None
    task: asyncio.Task[None] | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class Singletons:
    """`add` each singleton, then `start` (the first acquisition round is done before it returns) and `stop`.
    `held(name)` is the lease this replica believes it holds (an action must still fence with it);
    `states()` says held/standby per singleton for /readyz."""

    def __init__(self, leases: LeaseStore, *, metrics: Metrics, retry_every_s: float = RETRY_EVERY_S) -> None:
        self._leases = leases
        self._metrics = metrics
        self._retry_every_s = retry_every_s
        self._renew_every_s = leases.ttl.total_seconds() / 3
        self._slots: dict[str, _Slot] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def replica(self) -> str:
        return self._leases.replica

    @property
    def leases(self) -> LeaseStore:
        return self._leases

    def add(self, name: str, body: SingletonBody | None = None) -> None:
        """Register a singleton (before `start`). `body` runs while the lease is held; None for periodic jobs."""
        if name in self._slots:
            raise ValueError(f"singleton {name!r} is registered twice")
        self._slots[name] = _Slot(name, body)
        self._metrics.singleton_held.labels(name).set(0)

    def held(self, name: str) -> Lease | None:
        """The lease of `name` this replica holds as far as it knows (None: standby, or not registered)."""
        slot = self._slots.get(name)
        return slot.lease if slot is not None else None

    async def confirm(self, name: str) -> Lease | None:
        """The lease of `name` if this replica holds it *now*, by a fenced read in the database (None: standby, lost,
        or the database did not answer). For an action outside the database (an HTTP ping) right after."""
        lease = self.held(name)
        if lease is None:
            return None
        try:
            held = await self._leases.check(lease)
        except StorageUnavailable:
            return None
        if not held:
            self.report_lost(lease)
            return None
        return lease

    def report_lost(self, lease: Lease) -> None:
        """A fenced action found `lease` gone: stop its singleton now instead of at the next renewal."""
        slot = self._slots.get(lease.name)
        if slot is not None and slot.lease is not None and slot.lease.epoch == lease.epoch:
            slot.lost.set()

    def states(self) -> dict[str, str]:
        return {name: "held" if slot.lease is not None else "standby" for name, slot in sorted(self._slots.items())}

    async def start(self) -> None:
        for slot in self._slots.values():
            await self._try_acquire(slot)
        self._tasks = [
            asyncio.create_task(self._run(slot), name=f"singleton-{slot.name}") for slot in self._slots.values()
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for slot in self._slots.values():
            await self._stop_body(slot)
            if slot.lease is not None:
                with contextlib.suppress(StorageUnavailable):
                    await self._leases.release(slot.lease)
                self._drop(slot, reason=None)

    async def _run(self, slot: _Slot) -> None:
        while True:
            if slot.lease is None:
                await asyncio.sleep(self._retry_every_s)
                await self._try_acquire(slot)
                continue
            await self._hold(slot)

    async def _hold(self, slot: _Slot) -> None:
        """While held: wait a renewal period (or for the body to end, or a reported loss), then renew."""
        lost: asyncio.Future[bool] = asyncio.ensure_future(slot.lost.wait())
        waits: set[asyncio.Future[Any]] = {lost}
        if slot.task is not None:
            waits.add(slot.task)
        try:
            await asyncio.wait(waits, timeout=self._renew_every_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if slot.lost.is_set():
            await self._lose(slot, "expired")
            return
        if slot.task is not None and slot.task.done():
            error = None if slot.task.cancelled() else slot.task.exception()
            slot.task = None
            if isinstance(error, LeaseLost):
                await self._lose(slot, "expired")
                return
            log.error(
                "singleton.body_ended", singleton=slot.name, error=repr(error), hint="restarted; a bug: report it"
            )
            await asyncio.sleep(BODY_RESTART_S)
            self._start_body(slot)
        assert slot.lease is not None
        try:
            async with asyncio.timeout(self._renew_every_s):
                renewed = await self._leases.renew(slot.lease)
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning("singleton.renew_failed", singleton=slot.name, error=str(exc) or type(exc).__name__)
            await self._lose(slot, "storage")
            return
        if renewed is None:
            await self._lose(slot, "expired")
            return
        slot.lease = renewed

    async def _try_acquire(self, slot: _Slot) -> None:
        try:
            lease = await self._leases.acquire(slot.name)
        except StorageUnavailable as exc:
            log.info("singleton.acquire_failed", singleton=slot.name, error=str(exc))
            return
        if lease is None:
            return
        slot.lease = lease
        slot.lost = asyncio.Event()
        self._metrics.singleton_acquisitions.labels(slot.name).inc()
        self._metrics.singleton_held.labels(slot.name).set(1)
        if lease.taken_from is not None:
            self._metrics.singleton_failovers.labels(slot.name).inc()
        log.info("singleton.acquired", singleton=slot.name, epoch=lease.epoch, replica=lease.holder,
                 taken_from=lease.taken_from)  # fmt: skip
        self._start_body(slot)

    def _start_body(self, slot: _Slot) -> None:
        if slot.body is not None and slot.lease is not None:
            slot.task = asyncio.create_task(_run_body(slot.body, slot.lease), name=f"singleton-body-{slot.name}")

    async def _stop_body(self, slot: _Slot) -> None:
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task
            slot.task = None

    async def _lose(self, slot: _Slot, reason: str) -> None:
        await self._stop_body(slot)
        self._drop(slot, reason=reason)

    def _drop(self, slot: _Slot, *, reason: str | None) -> None:
        if slot.lease is not None and reason is not None:
            self._metrics.singleton_losses.labels(slot.name, reason).inc()
            log.warning("singleton.lost", singleton=slot.name, epoch=slot.lease.epoch, reason=reason)
        slot.lease = None
        self._metrics.singleton_held.labels(slot.name).set(0)


async def _run_body(body: SingletonBody, lease: Lease) -> None:
    await body(lease)
