"""Rate limits on alert ingest, per ingest token and source; a throttled sender pages admins (docs/threat-model.md T28).

Each (ingest token, source) pair has a token bucket counted in alerts (teleops.domain.token_bucket) sized by
`ingest:` (teleops.config.ingest). A request from a token whose bucket is empty is answered 429 with
Retry-After before its body is read; an admitted request is charged the alerts it carried.

Throttling is never silent. The first refusal of an episode opens one incident through the normal ingest path
(source ``teleops``, name ``IngestThrottled:<token>``, severity critical), so routes and escalation page whoever
handles ``source: teleops`` (docs/ingest-limits.md); every refusal counts in
``teleops_ingest_throttled_total{source,token}``. The episode ends, and the incident is resolved the same way,
once the bucket has refilled to its burst: the sender has stayed under its rate for that long. A watcher task
checks that every `poll_s` while an episode is open, and ends when none is.

State is in this process's memory: each replica limits the requests it receives (behind a load balancer that
spreads evenly, N replicas admit about N times the limit), and a restart forgets buckets and episodes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from teleops.config.ingest import IngestSettings, RateLimit
from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.domain.token_bucket import TokenBucket
from teleops.server.metrics import Metrics
from teleops.store.database import StorageUnavailable
from teleops.store.ingest import IngestWriter

__all__ = ["THROTTLE_SOURCE", "IngestLimits", "Throttled", "throttle_alert"]

log = structlog.get_logger(__name__)

THROTTLE_SOURCE = "teleops"  # the source of the incidents TeleOps opens about itself


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refused request: when to come back, and the limit it was over."""

    retry_after_s: int
    limit: RateLimit


@dataclass(slots=True)
class _Episode:
    limit: RateLimit  # the limit it went over (kept: the config of a running process does not change)
    refused: int = 0
    announced: bool = False  # the firing alert is committed
    busy: bool = False  # a firing or resolved alert is being committed right now


def throttle_alert(
    *, token: str, source: str, limit: RateLimit, status: AlertStatus, at: datetime, refused: int = 0
) -> Alert:
    """The alert TeleOps ingests about itself when `token` is throttled on `source` (firing) or is back under its
    limit (resolved)."""
    name = f"IngestThrottled:{token}"
    if status is AlertStatus.FIRING:
        summary = (
            f"Ingest token {token!r} is over its {source} rate limit ({limit.alerts} alerts per {limit.per}, burst "
            f"{limit.capacity}); its requests are answered 429"
        )
    else:
        summary = f"Ingest token {token!r} is back under its {source} rate limit after {refused} refused requests"
    description = (
        "Find what sends this much (a loop, a flapping check, an open Alertmanager API). If the rate is expected, "
        f"raise ingest.tokens.{token} or ingest.limits.{source}. Senders that drop an alert after a 429 (Zabbix "
        "media types after their attempts) may have lost alerts meanwhile: see docs/ingest-limits.md."
    )
    return Alert(
        source=THROTTLE_SOURCE,
        fingerprint=f"ingest-throttled:{token}:{source}",
        status=status,
        name=name,
        severity=Severity.CRITICAL,
        summary=summary,
        description=description,
        labels={"alertname": name, "token": token, "source": source, "severity": Severity.CRITICAL.value},
        starts_at=at if status is AlertStatus.FIRING else None,
        ends_at=at if status is AlertStatus.RESOLVED else None,
    )


class IngestLimits:
    """The buckets and throttling episodes of this process. `check` before reading a body, `charge` after."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        ingest: IngestWriter,
        metrics: Metrics,
        clock: Callable[[], datetime],
        poll_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self._metrics = metrics
        self._clock = clock
        self._poll_s = poll_s
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._episodes: dict[tuple[str, str], _Episode] = {}
        self._watcher: asyncio.Task[None] | None = None

    def throttled(self) -> list[tuple[str, str]]:
        """(token, source) of every open throttling episode."""
        return list(self._episodes)

    def _bucket(self, token: str, source: str, now: float) -> tuple[TokenBucket, RateLimit] | None:
        limit = self.settings.limit_for(source=source, token=token)
        if limit is None:
            return None
        bucket = self._buckets.get((token, source))
        if bucket is None:
            bucket = TokenBucket.full(rate=limit.per_second, capacity=limit.capacity, now=now)
            self._buckets[(token, source)] = bucket
        return bucket, limit

    async def check(self, token: str, source: str) -> Throttled | None:
        """None when a request from `token` to `source` may go on; else the refusal (counted, and the first of an
        episode opens the throttle incident before this returns). Raises nothing: a storage failure while opening
        the incident is logged and retried by the watcher."""
        at = self._clock()
        found = self._bucket(token, source, at.timestamp())
        if found is None:
            return None
        bucket, limit = found
        wait = bucket.wait(at.timestamp())
        if wait == 0.0:
            return None
        self._metrics.count_throttled(source, token)
        episode = self._episodes.setdefault((token, source), _Episode(limit))
        episode.refused += 1
        if not episode.announced and not episode.busy:
            log.warning("ingest.throttled", token=token, source=source, alerts=limit.alerts, per=str(limit.per))
            self._metrics.set_throttling(source, token, on=True)
            await self._commit(token, source, episode, AlertStatus.FIRING, at)
        self._watch()
        return Throttled(TokenBucket.retry_after(wait), limit)

    def charge(self, token: str, source: str, alerts: int) -> None:
        """Take `alerts` from the bucket of an admitted request."""
        now = self._clock().timestamp()
        found = self._bucket(token, source, now)
        if found is not None:
            found[0].charge(alerts, now)

    async def sweep(self) -> None:
        """Announce episodes not yet announced; resolve those whose bucket has refilled to its burst."""
        at = self._clock()
        for key, episode in list(self._episodes.items()):
            token, source = key
            if episode.busy:
                continue
            found = self._bucket(token, source, at.timestamp())
            # A limit switched off meanwhile throttles nothing any more: the episode is over.
            if found is not None and not found[0].is_full(at.timestamp()):
                if not episode.announced:
                    await self._commit(token, source, episode, AlertStatus.FIRING, at)
                continue
            if episode.announced and not await self._commit(token, source, episode, AlertStatus.RESOLVED, at):
                continue
            del self._episodes[key]
            self._metrics.set_throttling(source, token, on=False)
            log.info("ingest.throttle_ended", token=token, source=source, refused=episode.refused)

    async def close(self) -> None:
        """Stop the watcher (open episodes stay unresolved; a restart forgets them)."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _commit(self, token: str, source: str, episode: _Episode, status: AlertStatus, at: datetime) -> bool:
        episode.busy = True
        alert = throttle_alert(
            token=token, source=source, limit=episode.limit, status=status, at=at, refused=episode.refused
        )
        try:
            await self.ingest.submit([alert])
        except StorageUnavailable as exc:
            log.warning("ingest.throttle_incident_failed", token=token, source=source, status=status, error=str(exc))
            return False
        finally:
            episode.busy = False
        self._metrics.count_received(THROTTLE_SOURCE, [alert])
        if status is AlertStatus.FIRING:
            episode.announced = True
        return True

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_episodes(), name="ingest-throttle-watch")

    async def _watch_episodes(self) -> None:
        while self._episodes:
            await asyncio.sleep(self._poll_s)
            try:
                await self.sweep()
            except Exception:  # a background task: log it and keep watching, never end an episode silently
                log.exception("ingest.throttle_watch_failed")
