"""Write-back to Alertmanager: snoozing an Alertmanager incident silences it there, for as long as the snooze.

The silence follows the incident's *committed* state (a reconcile, not a replay of actions): after any
action on an Alertmanager-sourced incident, if it is snoozed into the future and has no live silence, one
is created (`POST /api/v2/silences`, matchers = the alert's labels, `endsAt` = snooze end); if it is no
longer snoozed (acked, resolved, snooze cancelled) and a silence of ours is still live, it is expired
(`DELETE /api/v2/silence/{id}`). Each outcome, failures included, is written on the incident's timeline, so
the person who snoozed sees whether Alertmanager took it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import structlog

from teleops.domain.incident import IncidentNotFound, IncidentRecord, IncidentStatus
from teleops.store.database import Database, StorageUnavailable
from teleops.store.database import Transaction as Connection
from teleops.store.incidents import add_timeline_event, get_incident

__all__ = ["SilenceWriter"]

log = structlog.get_logger(__name__)

CREATED = "silence.created"
EXPIRED = "silence.expired"
FAILED = "silence.failed"


class SilenceWriter:
    def __init__(
        self,
        db: Database,
        *,
        alertmanager_url: str,
        clock: Callable[[], datetime],
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._base = alertmanager_url.rstrip("/")
        self._clock = clock
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self._touched: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        """Call from the event loop before use (hooks run in worker threads and hand work back here)."""
        self._loop = asyncio.get_running_loop()

    # Hooks for act_on_incident: note the incident inside the transaction, reconcile after the commit.
    def on_incident_action(
        self, _conn: Connection, incident_id: int, _action: object, _actor: str, _now: datetime, _until: object
    ) -> None:
        self._touched.add(incident_id)

    def after_commit(self) -> None:
        touched, self._touched = self._touched, set()
        for incident_id in touched:
            self._spawn(self.reconcile(incident_id))

    def _spawn(self, coroutine: Any) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for reconciles in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._client.aclose()

    async def reconcile(self, incident_id: int) -> None:
        """Make Alertmanager's silence match the incident's snooze. Never raises: failures go on the timeline."""
        try:
            incident = await get_incident(self._db, incident_id)
        except (IncidentNotFound, StorageUnavailable) as exc:
            log.warning("silence.reconcile_skipped", incident_id=incident_id, error=str(exc))
            return
        if incident.source != "alertmanager":
            return
        now = self._clock()
        live = _live_silence(incident, now)
        wants = (
            incident.status == IncidentStatus.SNOOZED
            and incident.snoozed_until is not None
            and incident.snoozed_until > now
        )
        if wants and live is None:
            await self._create(incident, now)
        elif not wants and live is not None:
            await self._expire(incident, live, now)

    async def _create(self, incident: IncidentRecord, now: datetime) -> None:
        assert incident.snoozed_until is not None
        body = {
            "matchers": [
                {"name": name, "value": value, "isRegex": False, "isEqual": True}
                for name, value in sorted(incident.labels.items())
            ],
            "startsAt": now.isoformat(),
            "endsAt": incident.snoozed_until.isoformat(),
            "createdBy": "teleops",
            "comment": f"Snoozed in TeleOps (incident #{incident.id}) by {_snoozer(incident)}",
        }
        try:
            response = await self._client.post(f"{self._base}/api/v2/silences", json=body)
            response.raise_for_status()
            silence_id = str(response.json()["silenceID"])
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            await self._record(incident.id, FAILED, {"action": "create", "error": _why(exc)})
            return
        await self._record(
            incident.id, CREATED, {"silence_id": silence_id, "until": incident.snoozed_until.isoformat()}
        )

    async def _expire(self, incident: IncidentRecord, silence_id: str, now: datetime) -> None:
        try:
            response = await self._client.delete(f"{self._base}/api/v2/silence/{silence_id}")
            if response.status_code != 404:  # already gone is fine
                response.raise_for_status()
        except httpx.HTTPError as exc:
            await self._record(incident.id, FAILED, {"action": "expire", "silence_id": silence_id, "error": _why(exc)})
            return
        await self._record(incident.id, EXPIRED, {"silence_id": silence_id})

    async def _record(self, incident_id: int, kind: str, data: dict[str, Any]) -> None:
        if kind == FAILED:
            log.warning("silence.failed", incident_id=incident_id, **data)
        try:
            await add_timeline_event(self._db, incident_id, kind=kind, actor="teleops", data=data, now=self._clock())
        except StorageUnavailable as exc:
            log.warning("silence.timeline_unavailable", incident_id=incident_id, error=str(exc))


def _live_silence(incident: IncidentRecord, now: datetime) -> str | None:
    """Our newest silence for this incident if it was not expired and has not run out."""
    for event in reversed(incident.timeline):
        if event.kind == EXPIRED:
            return None
        if event.kind == CREATED:
            until = datetime.fromisoformat(str(event.data.get("until")))
            return str(event.data["silence_id"]) if until > now else None
    return None


def _snoozer(incident: IncidentRecord) -> str:
    for event in reversed(incident.timeline):
        if event.kind == "incident.snoozed":
            return event.actor or "someone"
    return "someone"


def _why(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"Alertmanager answered {exc.response.status_code}: {exc.response.text[:200]}"
    return f"{type(exc).__name__}: {exc}"[:300] + " — check oncall.alertmanager_url and that Alertmanager is up"
