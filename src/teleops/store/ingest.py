"""Alert ingestion with group commit: many requests, one transaction, each answered after its commit.

A request hands its parsed alerts to `IngestWriter.submit` and awaits the commit of the batch that
carried them. The writer applies a batch in one transaction on one connection, so "2xx only after
commit" holds at thousands of alerts per second on SQLite (docs/architecture.md, "Performance design").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from teleops.domain.alert import Alert
from teleops.store.database import Database, StorageUnavailable
from teleops.store.incident_events import IncidentEvents
from teleops.store.ingest_batch import AlertOutcome, BatchApplier, IncidentChange, Outcome, alert_digest

__all__ = ["AlertOutcome", "IncidentChange", "IngestWriter", "Outcome", "alert_digest"]

log = structlog.get_logger(__name__)

MAX_BATCH_ALERTS = 2000
# Batches committed but not yet fsynced at most: 1 would serialise apply and fsync again; more than 2 only
# makes smaller batches (more commits for the same alerts) without overlapping anything more.
PIPELINE_DEPTH = 2


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


class IngestWriter:
    """The single writer task of this process. `submit` returns only after the commit."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        events: IncidentEvents,
    ) -> None:
        """`events` hears of each batch's changes in its three phases (store/incident_events.py)."""
        self._db = db
        self._clock = clock
        self._events = events
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._not_durable: collections.deque[asyncio.Future[None]] = collections.deque()

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
        if changes:
            self._events.alerts_committed(changes)  # e.g. the outbox workers: they prepare, and wait for the fsync
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
        if changes:
            self._events.alerts_durable(changes)

    def _apply(
        self, conn: Connection, requests: Sequence[Sequence[Alert]]
    ) -> tuple[list[list[AlertOutcome]], list[IncidentChange]]:
        batch = BatchApplier(conn, self._clock())
        batch.prefetch(
            {(alert.source, alert.fingerprint) for alerts_of_request in requests for alert in alerts_of_request}
        )
        results = [[batch.apply(alert) for alert in alerts_of_request] for alerts_of_request in requests]
        batch.flush()
        results = [[batch.outcome(outcome) for outcome in outcomes] for outcomes in results]
        self._events.alerts_in_transaction(conn, batch.changes, batch.now)
        return results, batch.changes
