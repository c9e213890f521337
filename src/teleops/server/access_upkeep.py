"""Background upkeep for access control: anchor the audit head outside the database every few seconds and on
shutdown, and expire approval requests nobody decided on in time."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from teleops.commands.approval import ApprovalDesk
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.database import Database, StorageUnavailable

__all__ = ["AccessUpkeep"]

log = structlog.get_logger(__name__)

INTERVAL_S = 5.0


class AccessUpkeep:
    def __init__(
        self,
        db: Database,
        checkpoints: CheckpointLog,
        approvals: ApprovalDesk | None,
        *,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._db = db
        self._checkpoints = checkpoints
        self._approvals = approvals
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name="access-upkeep")

    async def stop(self) -> None:
        """Stop the loop, then take a last checkpoint so the newest events are anchored too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.once(expire=False)

    async def once(self, *, expire: bool = True) -> None:
        """One round: checkpoint the committed head (if it moved) and expire overdue approvals. Never raises."""
        try:
            await self._checkpoints.checkpoint(self._db)
        except (StorageUnavailable, OSError) as exc:
            log.warning("audit.checkpoint_failed", error=str(exc))
        if expire and self._approvals is not None:
            try:
                await self._approvals.expire_due()
            except StorageUnavailable as exc:
                log.warning("approval.expiry_failed", error=str(exc))

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)  # a period, not a wait for a condition
            await self.once()
