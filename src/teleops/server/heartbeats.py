"""The heartbeat monitor: notices a job that stopped pinging and pages through the normal ingest path.

A missed heartbeat (silent for longer than interval + grace, domain/heartbeat.py) becomes a firing alert of source
``heartbeat`` with a fingerprint per heartbeat name, submitted to the same IngestWriter as any webhook: it dedupes,
routes (on-call routes may match ``source: heartbeat`` or the heartbeat's labels), escalates and pages like any
alert. The next ping submits the resolved alert, which resolves the incident. `late_since` in the row records the
miss once, so one miss opens one incident and is resolved once.

The loop sleeps until the next heartbeat is due (at most MAX_SLEEP_S, so a clock jump, or a heartbeat defined on
another replica, is seen soon), or until woken when a heartbeat is defined. A controller that was down did not
hear the pings sent meanwhile: nothing is due before one interval after this monitor started.

Pings and the monitor's own transitions are serialised by one lock in this process. Several replicas each run a
monitor: before submitting the firing alert a monitor claims the check (`HeartbeatStore.claim_check`, a lease by the
database's clock), so one replica opens the incident and the others stand aside and look again after the lease; the
miss is recorded under that claim (`mark_late`). A monitor whose claim was taken over (it stalled) leaves the
incident alone, and takes its alert back only when the heartbeat pinged meanwhile (docs/heartbeats.md, "Several
replicas").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from teleops.config.heartbeats import HeartbeatSettings
from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.domain.clock import Clock
from teleops.domain.heartbeat import (
    HEARTBEAT_SOURCE,
    HeartbeatState,
    age_text,
    due_at,
    heartbeat_fingerprint,
)
from teleops.domain.message import Message
from teleops.server.metrics import Metrics
from teleops.store.database import StorageUnavailable
from teleops.store.heartbeats import HeartbeatNotFound, HeartbeatRecord, HeartbeatStore
from teleops.store.ingest import IngestWriter

__all__ = ["HeartbeatMonitor", "HeartbeatView", "heartbeat_alert"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HeartbeatView:
    """A heartbeat as the API and chat show it."""

    record: HeartbeatRecord
    state: HeartbeatState
    due_at: datetime | None  # None while late: nothing more is due until the next ping


def heartbeat_alert(record: HeartbeatRecord, status: AlertStatus, *, at: datetime) -> Alert:
    """The alert TeleOps ingests when `record` is missed (firing) or pings again (resolved)."""
    name = f"Heartbeat {record.name} missed"
    spec = record.spec
    expected = f"expected every {spec.interval} (+ {spec.grace} grace)"
    if status is AlertStatus.FIRING:
        if record.last_ping_at is None:
            heard = f"it has never pinged since it was defined at {_stamp(record.created_at)}"
        else:
            ago = age_text((at - record.last_ping_at).total_seconds())
            heard = f"last ping at {_stamp(record.last_ping_at)} ({ago} ago)"
        summary = f"Heartbeat {record.name} missed: {heard}; {expected}"
    else:
        summary = f"Heartbeat {record.name} pinged again at {_stamp(at)}"
    hint = (
        f"Check the job that pings /api/v1/heartbeats/{record.name}/ping (its cron entry, timer or Alertmanager "
        "route, its log, the token it sends). This incident resolves on the next ping."
    )
    description = f"{spec.description}\n\n{hint}" if spec.description else hint
    severity = Severity(spec.severity)
    labels = {**spec.labels, "alertname": name, "heartbeat": record.name, "severity": severity.value}
    return Alert(
        source=HEARTBEAT_SOURCE,
        fingerprint=heartbeat_fingerprint(record.name),
        status=status,
        name=name,
        severity=severity,
        summary=summary,
        description=description,
        labels=labels,
        starts_at=at if status is AlertStatus.FIRING else None,
        ends_at=at if status is AlertStatus.RESOLVED else None,
    )


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


class HeartbeatMonitor:
    """`start()` in the lifespan (syncs `heartbeats:` and starts the loop), `stop()` at shutdown."""

    MAX_SLEEP_S = 30.0
    RETRY_S = 1.0  # after a storage failure

    def __init__(
        self,
        store: HeartbeatStore,
        *,
        ingest: IngestWriter,
        metrics: Metrics,
        clock: Clock,
        configured: Sequence[HeartbeatSettings],
    ) -> None:
        self.store = store
        self._ingest = ingest
        self._metrics = metrics
        self._clock = clock
        self._configured = list(configured)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started_at = clock()

    async def start(self) -> None:
        """Sync the configured heartbeats (resolving the incident of any removed one that was late) and start the
        loop. Raises StorageUnavailable when the database does not answer (the controller does not start)."""
        self.started_at = self._clock()
        removed = await self.store.sync_configured(self._configured, now=self.started_at)
        for record in removed:
            if record.late_since is not None:
                await self._submit(record, AlertStatus.RESOLVED, at=self.started_at)
        self._task = asyncio.create_task(self._forever(), name="heartbeat-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Recompute the next due time now (a heartbeat was defined or changed)."""
        self._wake.set()

    def view(self, record: HeartbeatRecord) -> HeartbeatView:
        late = record.late_since is not None
        return HeartbeatView(record, record.state, None if late else due_at(record.timing, started_at=self.started_at))

    async def views(self) -> list[HeartbeatView]:
        """Every heartbeat with its state and due time. Raises StorageUnavailable."""
        return [self.view(record) for record in await self.store.all()]

    async def ping(self, name: str) -> HeartbeatView:
        """Record a ping of `name`; when it was late, first resolve its incident. Raises HeartbeatNotFound, and
        StorageUnavailable (then nothing was recorded: the sender should retry)."""
        async with self._lock:
            now = self._clock()
            record = await self.store.get(name)
            if record.late_since is not None:
                await self._submit(record, AlertStatus.RESOLVED, at=now)
                log.info("heartbeat.back", heartbeat=name, late_since=record.late_since.isoformat())
            if not await self.store.record_ping(name, now=now):
                record = await self.store.get(name)  # deleted meanwhile: HeartbeatNotFound
            self._metrics.count_ping(name)
            if record.late_since is not None:
                self._metrics.heartbeats_late.dec()
        pinged = HeartbeatRecord(
            name=record.name, origin=record.origin, spec=record.spec, created_at=record.created_at,
            updated_at=record.updated_at, last_ping_at=now, late_since=None,
        )  # fmt: skip
        return self.view(pinged)

    async def forget(self, record: HeartbeatRecord) -> None:
        """After `record` was deleted: resolve its incident if it was late (best effort; logged)."""
        if record.late_since is None:
            return
        async with self._lock:
            try:
                await self._submit(record, AlertStatus.RESOLVED, at=self._clock())
            except StorageUnavailable as exc:
                log.warning("heartbeat.resolve_failed", heartbeat=record.name, error=str(exc))
        self.wake()

    async def sweep(self) -> datetime | None:
        """Open an incident for every heartbeat due by now; returns the next due time (None: nothing is due until
        a ping or a new heartbeat). Raises StorageUnavailable."""
        async with self._lock:
            now = self._clock()
            next_due: datetime | None = None
            late = 0
            for record in await self.store.all():
                if record.late_since is not None:
                    late += 1
                    continue
                due = due_at(record.timing, started_at=self.started_at)
                if now < due:
                    next_due = due if next_due is None else min(next_due, due)
                    continue
                if not await self.store.claim_check(record.name, last_ping_at=record.last_ping_at):
                    # It pinged, is late already, or another replica is opening its incident: look again after
                    # that replica's claim would have run out.
                    retry = now + self.store.work_lease
                    next_due = retry if next_due is None else min(next_due, retry)
                    continue
                await self._submit(record, AlertStatus.FIRING, at=now)
                if await self.store.mark_late(record.name, now=now, last_ping_at=record.last_ping_at):
                    late += 1
                    log.warning("heartbeat.missed", heartbeat=record.name, due_at=due.isoformat())
                elif await self._pinged_since(record):  # it pinged (another replica) while we looked: take it back
                    await self._submit(record, AlertStatus.RESOLVED, at=now)
                else:  # this replica stalled past its claim and another recorded the miss: the incident is theirs
                    log.warning("heartbeat.check_taken_over", heartbeat=record.name)
            self._metrics.heartbeats_late.set(late)
            return next_due

    async def _pinged_since(self, record: HeartbeatRecord) -> bool:
        try:
            now = await self.store.get(record.name)
        except HeartbeatNotFound:
            return True  # deleted meanwhile: its alert is taken back
        return now.last_ping_at != record.last_ping_at

    async def _submit(self, record: HeartbeatRecord, status: AlertStatus, *, at: datetime) -> None:
        alert = heartbeat_alert(record, status, at=at)
        await self._ingest.submit([alert])
        self._metrics.count_received(HEARTBEAT_SOURCE, [alert])

    async def _forever(self) -> None:
        while True:
            self._wake.clear()  # before the sweep: a wake during it makes the next wait end at once
            try:
                next_due = await self.sweep()
                wait = self.MAX_SLEEP_S
                if next_due is not None:
                    # A hair past the due time, so the sweep then finds it due.
                    wait = min(wait, max((next_due - self._clock()).total_seconds() + 0.01, 0.01))
            except StorageUnavailable as exc:
                log.warning("heartbeat.sweep_failed", error=str(exc), hint="retried in a second")
                wait = self.RETRY_S
            except Exception:  # a background loop: log and go on, never stop watching silently
                log.exception("heartbeat.sweep_crashed")
                wait = self.RETRY_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def chat_message(self) -> Message:
        """`/heartbeats` in chat: every heartbeat with its state and how long ago it last pinged."""
        views = await self.views()
        if not views:
            return Message(
                body="No heartbeats are defined. Add them under `heartbeats:` in teleops.yaml or with "
                "PUT /api/v1/heartbeats/NAME (docs/heartbeats.md)."
            )
        now = self._clock()
        lines = ["Heartbeats:"]
        for view in views:
            record = view.record
            heard = (
                "never pinged"
                if record.last_ping_at is None
                else f"last ping {age_text((now - record.last_ping_at).total_seconds())} ago"
            )
            every = f"every {record.spec.interval} (+{record.spec.grace})"
            mark = {"up": "✅", "new": "⏳", "late": "🔴"}[view.state.value]
            lines.append(f"{mark} {record.name} — {view.state.value}, {heard}, {every}")
        return Message(body="\n".join(lines[:51]))
