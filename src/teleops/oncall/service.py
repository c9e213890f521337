"""The on-call side of the controller: the escalation worker (with handovers) and the Alertmanager write-back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from teleops.config import Settings
from teleops.oncall.directory import OnCallDirectory
from teleops.oncall.silences import SilenceWriter
from teleops.oncall.worker import EscalationWorker
from teleops.store.database import Database
from teleops.store.database import Transaction as Connection
from teleops.store.incidents import register_action_hooks
from teleops.store.ingest import IncidentChange

__all__ = ["OnCallService"]


class OnCallService:
    """Built by the lifespan. Its hooks go into the ingest writer and (registered here) act_on_incident."""

    def __init__(
        self, settings: Settings, *, db: Database, clock: Callable[[], datetime], wake_outbox: Callable[[], None]
    ) -> None:
        self.directory = OnCallDirectory(settings)
        self.worker = EscalationWorker(db, self.directory, clock=clock, on_enqueued=wake_outbox)
        register_action_hooks(db, self.worker.on_incident_action, self.worker.wake)
        self.silences: SilenceWriter | None = None
        if settings.oncall.alertmanager_url:
            self.silences = SilenceWriter(db, alertmanager_url=settings.oncall.alertmanager_url, clock=clock)
            register_action_hooks(db, self.silences.on_incident_action, self.silences.after_commit)

    # Ingest writer hooks.
    def on_ingest(self, conn: Connection, changes: Sequence[IncidentChange], now: datetime) -> None:
        self.worker.on_incidents_changed(conn, changes, now)

    def after_ingest(self, _changes: Sequence[IncidentChange] = ()) -> None:
        self.worker.wake()

    def start(self) -> None:
        if self.silences is not None:
            self.silences.attach()
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        if self.silences is not None:
            await self.silences.close()
