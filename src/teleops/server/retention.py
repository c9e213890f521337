"""The retention schedule: prune raw alert payloads every ``retention.every`` (store/retention.py says what).

With several replicas it is a singleton ("housekeeping"): only the replica holding the lease prunes, and each of its
delete transactions checks the lease (server/singletons.py)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from teleops.config import Settings
from teleops.domain.clock import Clock
from teleops.server.singletons import Singletons
from teleops.store.database import Database, StorageUnavailable
from teleops.store.leases import LeaseLost
from teleops.store.retention import prune_raw_alerts

__all__ = ["HOUSEKEEPING", "RetentionSchedule"]

log = structlog.get_logger(__name__)

HOUSEKEEPING = "housekeeping"  # the singleton lease of the retention schedule


class RetentionSchedule:
    """Runs one pruning pass a minute after start, then every ``retention.every``; never raises."""

    FIRST_AFTER_S = 60.0

    def __init__(self, db: Database, settings: Settings, *, clock: Clock, singletons: Singletons | None = None) -> None:
        self._db = db
        self._clock = clock
        self._keep = settings.retention.raw_alerts.timedelta
        self._every_s = settings.retention.every.seconds
        self._task: asyncio.Task[None] | None = None
        self._singletons = singletons
        if singletons is not None:
            singletons.add(HOUSEKEEPING)

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def once(self) -> int:
        """One pass; the number of alert reports deleted (0 when the database did not answer: logged; 0 in a
        replica that does not hold the housekeeping lease)."""
        now = self._clock()
        lease = None
        if self._singletons is not None:
            lease = self._singletons.held(HOUSEKEEPING)
            if lease is None:
                return 0  # another replica prunes
        try:
            result = await prune_raw_alerts(self._db, cutoff=now - self._keep, now=now, lease=lease)
        except StorageUnavailable as exc:
            log.warning("retention.failed", error=str(exc), hint="it is tried again at the next pass")
            return 0
        except LeaseLost as exc:
            assert lease is not None
            assert self._singletons is not None
            self._singletons.report_lost(lease)
            log.warning("retention.lease_lost", error=str(exc), hint="another replica prunes from now on")
            return 0
        if result.alerts_deleted:
            log.info("retention.pruned", alerts_deleted=result.alerts_deleted, cutoff=result.cutoff.isoformat())
        return result.alerts_deleted

    async def _forever(self) -> None:
        await asyncio.sleep(self.FIRST_AFTER_S)
        while True:
            await self.once()
            await asyncio.sleep(self._every_s)  # a period, not a wait for a condition
