"""The self-test: TeleOps' own path, end to end, every `self_check.self_test_every` (first a few seconds after start).

Each step runs under `self_check.timeout`, and every step runs even when one before failed (one outage should not
hide another):

1. **storage** — a real write transaction: this host's liveness row (`server_keys`) is rewritten with the time,
   committed *and fsynced* (`Database.write`), and read back. A full disk, a read-only file or standby, or a lock
   held past the busy timeout fails it.
2. **ingest** — a synthetic alert goes through the real ingest path: the generic source's parser (what
   `POST /api/v1/alerts/generic` runs), then `IngestWriter.submit` — the writer task, the group commit, the
   transaction with the notifier and on-call hooks, the fsync. The alert is a *resolved* report for the reserved
   fingerprint `teleops/self-test-probe`, which never fires, so the writer finds no open incident and answers
   "ignored": nothing is stored and nobody is paged, yet a stuck or dead writer (or a broken hook) fails the step.
   Chosen over a rolled-back transaction because it is the very code path alerts take, with no flag in it.
3. **outbox** — a probe message is queued on a platform of its own (`self-test-<random>`) and must be delivered by a
   real `OutboxWorker` (heads read, claim, fsync wait, gateway call, `sent` committed) into an in-memory gateway;
   the row is deleted afterwards. Then each configured platform's worker loop must be running, and its oldest
   message still queued must be younger than `self_check.max_outbox_age`.
4. **each chat platform** (step named after it) — `Gateway.probe()`: Telegram `getMe`, Slack `auth.test`, the
   console always fine. Proves the API is reachable and takes the token, not that a message to a given chat lands.

The result is kept in memory (`last`), counted in metrics, logged when it fails, and a failure that lasts two runs
in a row opens an incident through the normal ingest path (source `teleops`, fingerprint `self-test-failing`), which
the next passing run resolves. When storage or ingest is what fails, that incident cannot be stored either: the
dead-man's switch outside (pinger.py) is what tells then.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from teleops.chat.outbox import OutboxWorker
from teleops.chat.service import ChatService
from teleops.config.self_check import SelfCheckSettings
from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.server.metrics import Metrics
from teleops.server.selfwatch.health import SelfTestResult, StepResult
from teleops.server.selfwatch.probe_gateway import ProbeGateway
from teleops.sources.generic.parse import parse_generic
from teleops.store.database import Database, StorageUnavailable
from teleops.store.ingest import IngestWriter, Outcome
from teleops.store.outbox import OutboxStore
from teleops.store.outbox_queue import OutboxStatus
from teleops.store.self_check import (
    PROBE_PLATFORM_PREFIX,
    delete_probe,
    enqueue_probe,
    oldest_queued,
    probe_status,
    sweep_stale_probes,
    write_liveness_mark,
)

__all__ = ["FAILING_FINGERPRINT", "PROBE_FINGERPRINT", "SELF_SOURCE", "SelfTest", "self_test_alert"]

log = structlog.get_logger(__name__)

SELF_SOURCE = "teleops"  # the source of the incidents TeleOps opens about itself (as ingest_limits.py)
PROBE_FINGERPRINT = "self-test-probe"  # only ever reported resolved: never an incident
FAILING_FINGERPRINT = "self-test-failing"
OPEN_INCIDENT_AFTER = 2  # failed runs in a row before the incident: one blip pages no one
STALE_PROBE_AGE = timedelta(hours=1)
_POLL_S = 0.05


def self_test_alert(result: SelfTestResult, *, status: AlertStatus, failed_runs: int) -> Alert:
    """The alert TeleOps ingests about its own failing self-test (firing) or its recovery (resolved)."""
    name = "TeleOpsSelfTestFailing"
    if status is AlertStatus.FIRING:
        steps = ", ".join(step.step for step in result.failures)
        summary = f"TeleOps self-test failed {failed_runs} times in a row ({steps})"
        description = (
            f"{result.describe()}. See /readyz (self_test) and the controller's log (selfwatch.self_test_failed); "
            "docs/self-monitoring.md says what each step proves and what to check."
        )
    else:
        summary = "TeleOps self-test passes again"
        description = "Every self-test step passed."
    return Alert(
        source=SELF_SOURCE,
        fingerprint=FAILING_FINGERPRINT,
        status=status,
        name=name,
        severity=Severity.CRITICAL,
        summary=summary[:500],
        description=description[:2000],
        labels={"alertname": name, "severity": Severity.CRITICAL.value},
        starts_at=result.at if status is AlertStatus.FIRING else None,
        ends_at=result.at if status is AlertStatus.RESOLVED else None,
    )


class SelfTest:
    """`start` (its probe worker), `run` once, `stop`. `last` is the newest result (None before the first)."""

    def __init__(
        self,
        settings: SelfCheckSettings,
        *,
        db: Database,
        ingest: IngestWriter,
        chat: ChatService | None,
        metrics: Metrics,
        clock: Callable[[], datetime],
        host: str,
    ) -> None:
        self._db = db
        self._ingest = ingest
        self._chat = chat
        self._metrics = metrics
        self._clock = clock
        self._host = host
        self._timeout_s = settings.timeout.seconds
        self._max_outbox_age = settings.max_outbox_age.timedelta
        self._platform = PROBE_PLATFORM_PREFIX + secrets.token_hex(4)  # this process's own: others never serve it
        self._gateway = ProbeGateway(self._platform, clock=clock)
        self._worker = OutboxWorker(OutboxStore(db), self._gateway, clock=clock)
        self.last: SelfTestResult | None = None
        self.last_success_at: datetime | None = None
        self.failed_runs = 0  # in a row
        self._incident_open: bool | None = None  # None: unknown (an earlier process may have left one open)

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()

    async def run(self) -> SelfTestResult:
        """One self-test; never raises. Updates `last`, the metrics, the log and the self-test incident."""
        steps = [
            await self._step("storage", self._storage),
            await self._step("ingest", self._ingest_probe),
            await self._step("outbox", self._outbox),
        ]
        for platform in self._chat.platforms() if self._chat is not None else []:
            steps.append(await self._step(platform, functools.partial(self._platform_probe, platform)))
        result = SelfTestResult(at=self._clock(), steps=tuple(steps))
        self._record(result)
        await self._announce(result)
        return result

    async def _step(self, name: str, check: Callable[[], Awaitable[str | None]]) -> StepResult:
        try:
            async with asyncio.timeout(self._timeout_s):
                error = await check()
        except TimeoutError:
            error = f"no answer within {self._timeout_s:g}s (self_check.timeout)"
        except StorageUnavailable as exc:
            error = f"the database refused: {exc}"
        except Exception as exc:  # a bug in a step is a failed step, never a dead self-test loop
            log.exception("selfwatch.step_crashed", step=name)
            error = f"internal error: {type(exc).__name__}: {exc}"[:300]
        return StepResult(name, error)

    async def _storage(self) -> str | None:
        await write_liveness_mark(self._db, self._host, now=self._clock())
        return None

    async def _ingest_probe(self) -> str | None:
        body = {"check": "TeleOpsSelfTest", "dedup_key": PROBE_FINGERPRINT, "status": "resolved",
                "summary": "TeleOps self-test probe (never an incident)"}  # fmt: skip
        alerts = [replace(alert, source=SELF_SOURCE) for alert in parse_generic(body)]
        outcomes = await self._ingest.submit(alerts)
        got = outcomes[0].outcome if outcomes else None
        if got is not Outcome.IGNORED:
            return (
                f"the probe alert {SELF_SOURCE}/{PROBE_FINGERPRINT} was {got} instead of ignored: an incident "
                "with that fingerprint is open; resolve it"
            )
        return None

    async def _outbox(self) -> str | None:
        now = self._clock()
        await sweep_stale_probes(self._db, before=now - STALE_PROBE_AGE)
        if not self._worker.running:
            return "the self-test's own delivery worker is not running"
        row_id = await enqueue_probe(self._db, self._platform, chat_id=self._host[:255], now=now)
        try:
            self._worker.wake()
            while (status := await probe_status(self._db, row_id)) != OutboxStatus.SENT.value:
                if status in (OutboxStatus.FAILED.value, None):
                    return f"the probe message ended {status or 'deleted'} instead of sent"
                await asyncio.sleep(_POLL_S)  # the step's timeout bounds this
        finally:
            await delete_probe(self._db, row_id)
        if self._chat is None:
            return None
        stopped = [p for p in self._chat.platforms() if not self._chat.delivering(p)]
        if stopped:
            return f"the outbox worker of {', '.join(stopped)} is not running: restart the controller, report its log"
        oldest = await oldest_queued(self._db, self._chat.platforms())
        now = self._clock()
        late = {p: now - at for p, at in oldest.items() if now - at > self._max_outbox_age}
        if late:
            ages = ", ".join(f"{p} {age.total_seconds():.0f}s" for p, age in sorted(late.items()))
            return (
                f"messages wait in the outbox longer than {self._max_outbox_age.total_seconds():.0f}s "
                f"(self_check.max_outbox_age): oldest {ages}; see outbox.retry lines in the log and the platform step"
            )
        return None

    async def _platform_probe(self, platform: str) -> str | None:
        gateway = self._chat.gateway(platform) if self._chat is not None else None
        if gateway is None:
            return "not configured any more"
        return await gateway.probe()

    def _record(self, result: SelfTestResult) -> None:
        self.last = result
        self._metrics.self_test_ok.set(1.0 if result.ok else 0.0)
        if result.ok:
            self.failed_runs = 0
            self.last_success_at = result.at
            self._metrics.self_test_last_success.set(time.time())
            return
        self.failed_runs += 1
        for step in result.failures:
            self._metrics.count_self_test_failure(step.step)
            log.warning("selfwatch.self_test_failed", step=step.step, reason=step.error, failed_runs=self.failed_runs)

    async def _announce(self, result: SelfTestResult) -> None:
        """Open the self-test incident after OPEN_INCIDENT_AFTER failed runs; resolve it when a run passes."""
        if result.ok and self._incident_open is not False:
            status = AlertStatus.RESOLVED
        elif not result.ok and self.failed_runs >= OPEN_INCIDENT_AFTER and not self._incident_open:
            status = AlertStatus.FIRING
        else:
            return
        alert = self_test_alert(result, status=status, failed_runs=self.failed_runs)
        try:
            async with asyncio.timeout(self._timeout_s):
                outcomes = await self._ingest.submit([alert])
        except (StorageUnavailable, TimeoutError) as exc:
            log.warning("selfwatch.incident_not_stored", status=status.value, error=str(exc) or "timed out",
                        hint="tried again after the next self-test")  # fmt: skip
            return
        self._incident_open = status is AlertStatus.FIRING
        if outcomes and outcomes[0].outcome is Outcome.IGNORED:
            return  # resolving an incident that was not open (the first pass after a start)
        self._metrics.count_received(SELF_SOURCE, [alert])
        if status is AlertStatus.FIRING:
            log.error("selfwatch.incident_opened", failed_runs=self.failed_runs, reason=result.describe())
        else:
            log.info("selfwatch.incident_resolved")
