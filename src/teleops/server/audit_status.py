"""The audit chain's state for the audit page: the same check as `teleops audit verify`, cached.

A full verification re-hashes every record (store/audit_verify.py): measured at about 15,000 records a second
on SQLite (100,000 records: 6.7 s; docs/web-ui.md). Page views must not pay that, so a page shows the last
result with "verified up to record N at T"; when that is older than `MAX_AGE` (one minute) the view starts a
re-check in the background and the next view shows it. Only the first view after a start, and "Verify now",
wait for a check. One check runs at a time per process.

Besides the verdict the page shows the newest anchor outside the database: the last line of the checkpoint file
and, with `audit.witness`, the newest head the witness recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from starlette.requests import HTTPConnection

from teleops.server.services import Services
from teleops.store.audit_checkpoints import Checkpoint, CheckpointError, CheckpointLog
from teleops.store.audit_verify import Finding, verify_audit
from teleops.store.database import StorageUnavailable

log = structlog.get_logger(__name__)

__all__ = ["MAX_AGE", "AuditChainStatus", "ChainState", "chain_status"]

MAX_AGE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ChainState:
    finding: Finding
    checked_at: datetime
    took_s: float
    last_checkpoint: Checkpoint | None
    witness: str | None  # the witness socket, when one is configured


@dataclass(slots=True)
class AuditChainStatus:
    max_age: timedelta = MAX_AGE
    _cached: ChainState | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _refresh: asyncio.Task[None] | None = None

    async def get(self, services: Services, *, fresh: bool = False) -> ChainState:
        """The last result; a stale one starts a re-check in the background (the page shows when it was checked).

        With `fresh`, or before the first result, waits for a new check. Raises StorageUnavailable.
        """
        now = services.clock()
        cached = self._cached
        if not fresh and cached is not None:
            if now - cached.checked_at >= self.max_age and (self._refresh is None or self._refresh.done()):
                self._refresh = asyncio.create_task(self._background(services))
            return cached
        return await self._checked_since(services, now)

    async def _checked_since(self, services: Services, asked: datetime) -> ChainState:
        async with self._lock:  # one check at a time; a view that waited may take the one that just finished
            cached = self._cached
            if cached is not None and cached.checked_at >= asked:
                return cached
            self._cached = state = await self._check(services)
            return state

    async def _background(self, services: Services) -> None:
        try:
            await self._checked_since(services, services.clock())
        except StorageUnavailable:
            log.warning("audit_status.refresh_failed", exc_info=True)  # the page keeps the older result

    async def _check(self, services: Services) -> ChainState:
        settings = services.settings
        log = services.checkpoints or CheckpointLog(settings.data_dir, witness=settings.audit.witness)
        started = time.perf_counter()
        finding = await verify_audit(services.db, log)
        took = time.perf_counter() - started
        try:
            checkpoints = await asyncio.to_thread(log.read)
        except CheckpointError:
            checkpoints = []  # the finding already says what is wrong with the file
        witness = str(settings.audit.witness) if settings.audit.witness is not None else None
        return ChainState(finding, services.clock(), took, checkpoints[-1] if checkpoints else None, witness)


def chain_status(connection: HTTPConnection) -> AuditChainStatus:
    """The app's AuditChainStatus, created on first use."""
    state = connection.app.state
    existing: AuditChainStatus | None = getattr(state, "audit_chain_status", None)
    if existing is None:
        state.audit_chain_status = existing = AuditChainStatus()
    return existing
