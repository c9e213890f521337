"""The on-call side of the controller: the escalation worker (with handovers) and the Alertmanager write-back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from teleops.chat.storm import storm_rule
from teleops.config import Settings
from teleops.domain.message import Message
from teleops.oncall.delivery import PageOutcome
from teleops.oncall.directory import OnCallDirectory
from teleops.oncall.handover import digest_message, oncall_message
from teleops.oncall.silences import SilenceWriter
from teleops.oncall.worker import EscalationWorker
from teleops.store.database import Database, StorageUnavailable
from teleops.store.database import Transaction as Connection
from teleops.store.handover import HandoverFacts, handover_facts
from teleops.store.incident_events import IncidentEvents
from teleops.store.ingest import IncidentChange

__all__ = ["OnCallService"]


class OnCallService:
    """Built by the lifespan. It subscribes to incident events (new alerts, people's actions) itself."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        events: IncidentEvents,
        clock: Callable[[], datetime],
        wake_outbox: Callable[[], None],
        on_page_outcome: PageOutcome = lambda _state, _platform, _cause: None,
        on_step: Callable[[str], None] = lambda _team: None,
        token_problems: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self._db = db
        self._clock = clock
        self.directory = OnCallDirectory(settings)
        self.worker = EscalationWorker(
            db,
            self.directory,
            clock=clock,
            on_enqueued=wake_outbox,
            storms=storm_rule(settings),
            on_page_outcome=on_page_outcome,
            on_step=on_step,
            token_problems=token_problems,
        )
        # New incidents start their escalation in the ingest's transaction; the worker runs once they are on disk.
        events.on_alerts(in_transaction=self.on_ingest, durable=self.after_ingest)
        events.on_action(in_transaction=self.worker.on_incident_action, committed=self.worker.wake)
        self.silences: SilenceWriter | None = None
        if settings.oncall.alertmanager_url:
            self.silences = SilenceWriter(db, alertmanager_url=settings.oncall.alertmanager_url, clock=clock)
            events.on_action(in_transaction=self.silences.on_incident_action, committed=self.silences.after_commit)

    # Ingest writer hooks.
    def on_ingest(self, conn: Connection, changes: Sequence[IncidentChange], now: datetime) -> None:
        self.worker.on_incidents_changed(conn, changes, now)

    def after_ingest(self, changes: Sequence[IncidentChange] = ()) -> None:
        if self.worker.escalates(changes):
            self.worker.wake()

    # Chat answers (chat.conversation.OnCallAnswers).
    async def oncall_message(self) -> Message:
        now = self._clock()
        try:
            await self._db.read(self.directory.load_overrides, now)
        except StorageUnavailable:  # still answer: from config and the overrides read last time
            message = oncall_message(self.directory.on_call_now(now))
            note = "(The database is unavailable: overrides made in the web UI since the last read may be missing.)"
            return Message(title=message.title, body=f"{message.body}\n{note}")
        return oncall_message(self.directory.on_call_now(now))

    async def handover_message(self, user: str) -> Message:
        """The digest since the current shift began (of the first rotation `user` is in; else the last 24 h)."""
        now = self._clock()
        await self._db.read(self.directory.load_overrides, now)
        since = now - timedelta(hours=24)
        incoming = None
        for rotation in self.directory.rotations.values():
            if user in rotation.members:
                shift = rotation.shift_at(now)
                since, (_, incoming) = shift.start, rotation.next_handoff(now)
                break

        def facts(conn: Connection) -> HandoverFacts:
            return handover_facts(conn, since=since, now=now)

        return digest_message(await self._db.run_in_transaction(facts), incoming=incoming, since=since, now=now)

    def start(self) -> None:
        if self.silences is not None:
            self.silences.attach()
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        if self.silences is not None:
            await self.silences.close()
