"""Alert ingestion with group commit: many requests, one transaction, each answered after its commit.

A request hands its parsed alerts to `IngestWriter.submit` and awaits the commit of the batch that
carried them. The writer applies a batch in one transaction on one connection, so "2xx only after
commit" holds at thousands of alerts per second on SQLite (ARCHITECTURE §8).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.domain.alert import Alert, AlertStatus
from teleops.domain.incident import IncidentStatus, TimelineKind
from teleops.store.database import Database, StorageUnavailable
from teleops.store.schema import alerts, incidents, timeline

__all__ = ["AlertOutcome", "IncidentChange", "IngestWriter", "Outcome", "alert_digest"]

log = structlog.get_logger(__name__)

MAX_BATCH_ALERTS = 2000
# Batches committed but not yet fsynced at most: 1 would serialise apply and fsync again; more than 2 only
# makes smaller batches (more commits for the same alerts) without overlapping anything more.
PIPELINE_DEPTH = 2


class Outcome(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    outcome: Outcome
    incident_id: int | None


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """A real change to an incident, handed to hooks inside the same transaction (e.g. the outbox)."""

    incident_id: int
    outcome: Outcome
    alert: Alert
    predecessor_id: int | None = None


# Called inside the ingest transaction with the changes of the batch; used to enqueue notifications
# atomically with the incident rows (invariant 1: nothing acknowledged is lost).
ChangeHook = Callable[[Connection, Sequence[IncidentChange], datetime], None]


@dataclass(slots=True)
class _Request:
    alerts: Sequence[Alert]
    future: asyncio.Future[list[AlertOutcome]]


@dataclass(slots=True)
class _Batch:
    requests: list[_Request] = field(default_factory=list)
    size: int = 0


def _fail(requests: Sequence[_Request], error: StorageUnavailable) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)


def alert_digest(alert: Alert) -> str:
    """What makes a delivery a *real change*: status, name, severity, host, summary, labels, start.

    Descriptions and annotations are left out on purpose: senders template live values into them
    (`$value`), and a new number is not a new event on the timeline.
    """
    material = json.dumps(
        [
            alert.status.value,
            alert.name,
            alert.severity.value,
            alert.host,
            alert.summary,
            sorted(alert.labels.items()),
            alert.starts_at.isoformat() if alert.starts_at else None,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class IngestWriter:
    """The single writer task of this process. `submit` returns only after the commit."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        hooks: Sequence[ChangeHook] = (),
        on_changes: Callable[[Sequence[IncidentChange]], None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._hooks = list(hooks)
        self._on_changes = on_changes
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._not_durable: collections.deque[asyncio.Future[None]] = collections.deque()

    def add_hook(self, hook: ChangeHook) -> None:
        self._hooks.append(hook)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._answering):  # batches already committed: let their answers go out
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=10)
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(StorageUnavailable("TeleOps is shutting down"))

    async def submit(self, batch: Sequence[Alert]) -> list[AlertOutcome]:
        """Store `batch` durably; one outcome per alert. Raises StorageUnavailable (answer 503)."""
        if self._task is None:
            raise StorageUnavailable("the ingest writer is not running")
        future: asyncio.Future[list[AlertOutcome]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(batch, future))
        return await future

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._room_in_pipeline()  # meanwhile more requests queue up: bigger batches, fewer commits
            batch = _Batch([first], len(first.alerts))
            while batch.size < MAX_BATCH_ALERTS and not self._queue.empty():
                request = self._queue.get_nowait()
                batch.requests.append(request)
                batch.size += len(request.alerts)
            await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        """Apply one batch and return once it is committed; its requests are answered once it is durable.

        Returning before the fsync lets the next batch be applied while this one's WAL flush runs
        (Database.submit_batch); the requests still wait for their own batch's durable commit.
        """
        live = [r for r in batch.requests if not r.future.done()]  # a client may have gone away
        if not live:
            return
        payload = [r.alerts for r in live]
        try:
            commit = self._db.submit_batch(self._apply, payload)
            try:
                results, changes = await commit.applied
            except IntegrityError:
                # Another replica opened the same incident between our lookup and our insert; the
                # retried lookup finds it.
                commit = self._db.submit_batch(self._apply, payload)
                results, changes = await commit.applied
        except StorageUnavailable as exc:
            log.warning("ingest.batch_failed", requests=len(live), error=str(exc))
            _fail(live, StorageUnavailable(str(exc)))
            return
        except Exception as exc:  # a bug must fail the requests (503), never kill the writer task
            log.exception("ingest.batch_crashed", requests=len(live))
            _fail(live, StorageUnavailable(f"internal error: {type(exc).__name__}"))
            return
        task = asyncio.create_task(self._answer(live, results, changes, commit.durable), name="ingest-answer")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        self._not_durable.append(commit.durable)

    async def _room_in_pipeline(self) -> None:
        """Wait until fewer than PIPELINE_DEPTH committed batches still wait for their fsync."""
        while self._not_durable and self._not_durable[0].done():
            self._not_durable.popleft()
        while len(self._not_durable) >= PIPELINE_DEPTH:
            oldest = self._not_durable.popleft()
            await asyncio.wait([oldest])  # its outcome is the answering task's business

    async def _answer(
        self,
        live: list[_Request],
        results: list[list[AlertOutcome]],
        changes: list[IncidentChange],
        durable: asyncio.Future[None],
    ) -> None:
        try:
            await durable
        except StorageUnavailable as exc:
            # Committed but not known to be on disk: 503, the sender retries and dedup finds the incident.
            log.warning("ingest.batch_not_durable", requests=len(live), error=str(exc))
            _fail(live, StorageUnavailable(str(exc)))
            return
        for request, outcome in zip(live, results, strict=True):
            if not request.future.done():
                request.future.set_result(outcome)
        if changes and self._on_changes is not None:
            self._on_changes(changes)

    def _apply(
        self, conn: Connection, requests: Sequence[Sequence[Alert]]
    ) -> tuple[list[list[AlertOutcome]], list[IncidentChange]]:
        batch = _BatchApplier(conn, self._clock())
        batch.prefetch(
            {(alert.source, alert.fingerprint) for alerts_of_request in requests for alert in alerts_of_request}
        )
        results = [[batch.apply(alert) for alert in alerts_of_request] for alerts_of_request in requests]
        batch.flush()
        for hook in self._hooks:
            hook(conn, batch.changes, batch.now)
        return results, batch.changes


# The hot statements are built once: constructing a Core statement per alert (argument coercion, cache
# key) cost more than executing it (py-spy profile of B2 in docs/benchmarks.md).
_OPEN = insert(incidents).returning(incidents.c.id)
_TOUCH = (
    update(incidents)
    .where(incidents.c.id == bindparam("incident_id"))
    .values(count=incidents.c.count + bindparam("n"), last_seen_at=bindparam("seen_at"))
)


@dataclass(slots=True)
class _Latest:
    """The newest incident of one (source, fingerprint) as this batch left it so far."""

    id: int
    status: str
    digest: str
    starts_at: datetime | None
    resolved_at: datetime | None


# One query per batch finds the newest incident of every fingerprint in it (by ix_incidents_source_fingerprint_id):
# one round trip on PostgreSQL instead of one per alert.
_PREFETCH_CHUNK = 500  # fingerprints per query, well under SQLite's bound-parameter limit


# `source = ? AND fingerprint IN (…)` is an index SEARCH per key on SQLite; a row-value
# `(source, fingerprint) IN (VALUES …)` was planned as a SCAN of the whole index (EXPLAIN QUERY PLAN).
_NEWEST_PER_FINGERPRINT = (
    select(func.max(incidents.c.id))
    .where(
        incidents.c.source == bindparam("source"),
        incidents.c.fingerprint.in_(bindparam("fingerprints", expanding=True)),
    )
    .group_by(incidents.c.fingerprint)
)
_PREFETCH = select(
    incidents.c.id,
    incidents.c.source,
    incidents.c.fingerprint,
    incidents.c.status,
    incidents.c.digest,
    incidents.c.starts_at,
    incidents.c.resolved_at,
).where(incidents.c.id.in_(_NEWEST_PER_FINGERPRINT.scalar_subquery()))
_INSERT_ALERTS = insert(alerts)
_INSERT_EVENTS = insert(timeline)


class _BatchApplier:
    """Applies one batch on one connection.

    The newest incident of each fingerprint is read once per batch (`prefetch`) and then kept up to date
    in memory as the batch changes it; repeated deliveries of an open incident only count, and their
    "touch" updates are folded into one statement per incident at `flush`, with the history rows
    (executemany). The duplicate path thus costs no SQL per alert.
    """

    def __init__(self, conn: Connection, now: datetime) -> None:
        self.conn = conn
        self.now = now
        self.changes: list[IncidentChange] = []
        self._alert_rows: list[dict[str, Any]] = []
        self._event_rows: list[dict[str, Any]] = []
        self._latest: dict[tuple[str, str], _Latest | None] = {}
        self._touches: dict[int, int] = {}

    def prefetch(self, keys: set[tuple[str, str]]) -> None:
        by_source: dict[str, list[str]] = {}
        for source, fingerprint in sorted(keys):
            self._latest[(source, fingerprint)] = None
            by_source.setdefault(source, []).append(fingerprint)
        for source, fingerprints in by_source.items():
            for start in range(0, len(fingerprints), _PREFETCH_CHUNK):
                chunk = fingerprints[start : start + _PREFETCH_CHUNK]
                for row in self.conn.execute(_PREFETCH, {"source": source, "fingerprints": chunk}):
                    self._latest[(row.source, row.fingerprint)] = _Latest(
                        row.id, row.status, row.digest, row.starts_at, row.resolved_at
                    )

    def apply(self, alert: Alert) -> AlertOutcome:
        # The newest incident of this fingerprint is the open one if any is open (a new one is only ever
        # opened when none is), else the predecessor of the one we may open: one indexed lookup serves both.
        key = (alert.source, alert.fingerprint)
        if key not in self._latest:
            self.prefetch({key})
        latest = self._latest[key]
        is_open = latest is not None and latest.resolved_at is None
        if alert.status is AlertStatus.FIRING:
            if latest is None or not is_open:
                if latest is not None and alert.starts_at is not None and latest.starts_at == alert.starts_at:
                    # A late copy of an occurrence that already resolved (e.g. the second peer of an HA pair).
                    return AlertOutcome(Outcome.DUPLICATE, latest.id)
                return self._open(alert, latest.id if latest is not None else None)
            assert latest is not None
            return self._update(alert, latest)
        if latest is None or not is_open:
            return AlertOutcome(Outcome.IGNORED, None)
        if alert.status is AlertStatus.RESOLVED:
            return self._resolve(alert, latest)
        return self._acknowledge(alert, latest)

    def flush(self) -> None:
        if self._touches:
            self.conn.execute(
                _TOUCH, [{"incident_id": i, "n": n, "seen_at": self.now} for i, n in self._touches.items()]
            )
        if self._alert_rows:
            self.conn.execute(_INSERT_ALERTS, self._alert_rows)
        if self._event_rows:
            self.conn.execute(_INSERT_EVENTS, self._event_rows)

    def _open(self, alert: Alert, predecessor_id: int | None) -> AlertOutcome:
        digest = alert_digest(alert)
        incident_id = self.conn.execute(
            _OPEN,
            {
                "source": alert.source,
                "fingerprint": alert.fingerprint,
                "status": IncidentStatus.OPEN.value,
                "name": alert.name,
                "severity": alert.severity.value,
                "host": alert.host,
                "summary": alert.summary,
                "description": alert.description,
                "labels": dict(alert.labels),
                "annotations": dict(alert.annotations),
                "url": alert.url,
                "count": 1,
                "digest": digest,
                "starts_at": alert.starts_at,
                "created_at": self.now,
                "last_seen_at": self.now,
                "predecessor_id": predecessor_id,
            },
        ).scalar_one()
        data: dict[str, Any] = {"summary": alert.summary, "severity": alert.severity.value, "host": alert.host}
        if predecessor_id is not None:
            data["predecessor_id"] = predecessor_id
        self._record(incident_id, alert, TimelineKind.ALERT_FIRED, data)
        self._latest[(alert.source, alert.fingerprint)] = _Latest(
            incident_id, IncidentStatus.OPEN.value, digest, alert.starts_at, None
        )
        self.changes.append(IncidentChange(incident_id, Outcome.CREATED, alert, predecessor_id))
        return AlertOutcome(Outcome.CREATED, incident_id)

    def _update(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        incident_id = latest.id
        digest = alert_digest(alert)
        if digest == latest.digest:
            self._touches[incident_id] = self._touches.get(incident_id, 0) + 1
            return AlertOutcome(Outcome.DUPLICATE, incident_id)
        latest.digest = digest
        query = update(incidents).where(incidents.c.id == incident_id)
        self.conn.execute(
            query.values(
                count=incidents.c.count + 1,
                last_seen_at=self.now,
                digest=digest,
                severity=alert.severity.value,
                summary=alert.summary,
                description=alert.description,
                labels=dict(alert.labels),
                annotations=dict(alert.annotations),
                host=alert.host,
                url=alert.url,
            )
        )
        data = {"summary": alert.summary, "severity": alert.severity.value}
        self._record(incident_id, alert, TimelineKind.ALERT_UPDATED, data)
        self.changes.append(IncidentChange(incident_id, Outcome.UPDATED, alert))
        return AlertOutcome(Outcome.UPDATED, incident_id)

    def _resolve(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        incident_id = latest.id
        latest.status = IncidentStatus.RESOLVED.value
        latest.resolved_at = self.now
        self.conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id)
            .values(
                status=IncidentStatus.RESOLVED.value,
                resolved_at=self.now,
                resolved_by=f"source:{alert.source}",
                last_seen_at=self.now,
                snoozed_until=None,
            )
        )
        ends_at = alert.ends_at.isoformat() if alert.ends_at else None
        self._record(incident_id, alert, TimelineKind.ALERT_RESOLVED, {"ends_at": ends_at})
        self.changes.append(IncidentChange(incident_id, Outcome.RESOLVED, alert))
        return AlertOutcome(Outcome.RESOLVED, incident_id)

    def _acknowledge(self, alert: Alert, latest: _Latest) -> AlertOutcome:
        """A sender's own acknowledge (PagerDuty Events v2); only an open incident changes."""
        incident_id = latest.id
        if IncidentStatus(latest.status) is not IncidentStatus.OPEN:
            return AlertOutcome(Outcome.DUPLICATE, incident_id)
        latest.status = IncidentStatus.ACKNOWLEDGED.value
        actor = f"source:{alert.source}"
        self.conn.execute(
            update(incidents)
            .where(incidents.c.id == incident_id)
            .values(status=IncidentStatus.ACKNOWLEDGED.value, acknowledged_at=self.now, acknowledged_by=actor)
        )
        self._event_rows.append(
            {
                "incident_id": incident_id,
                "at": self.now,
                "kind": TimelineKind.ACKNOWLEDGED.value,
                "actor": actor,
                "data": {},
            }
        )
        self.changes.append(IncidentChange(incident_id, Outcome.ACKNOWLEDGED, alert))
        return AlertOutcome(Outcome.ACKNOWLEDGED, incident_id)

    def _record(self, incident_id: int, alert: Alert, kind: TimelineKind, data: dict[str, Any]) -> None:
        """The alert occurrence and its timeline event, written at flush."""
        self._alert_rows.append(
            {
                "incident_id": incident_id,
                "status": alert.status.value,
                "received_at": self.now,
                "alert": alert.to_json(),
            }
        )
        self._event_rows.append(
            {
                "incident_id": incident_id,
                "at": self.now,
                "kind": kind.value,
                "actor": f"source:{alert.source}",
                "data": data,
            }
        )
