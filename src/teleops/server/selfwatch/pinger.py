"""The dead-man's-switch pinger: every `self_check.ping_every`, tell an external switch whether TeleOps is healthy.

Healthy (health.py decides): GET `ping_url`. Unhealthy: POST `fail_url` with the reason as the body (healthchecks'
`/fail` shows it), or nothing when there is no `fail_url`. The switch pages when pings stop coming, so everything
that stops TeleOps stops the pings by construction: the pinger is a task on the controller's own event loop, which
a stopped (SIGSTOP), crashed or deadlocked controller does not run; a starved loop makes it wake late, which is a
reason to be unhealthy; and the liveness write it makes right before each ping fails on a database that cannot
take a write.

With several replicas the pings are a singleton ("deadman-pinger"): `may_ping` is asked right before each request
and says whether this replica holds the lease now, by a fenced read in the database; a replica that does not (a
standby, or one frozen and resumed after another took over) sends nothing, and its tick counts as "standby".

The URLs carry the check's secret: they are never logged, only their scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
import structlog

import teleops
from teleops.config.self_check import SelfCheckSettings
from teleops.server.metrics import Metrics
from teleops.server.selfwatch.health import Health, Verdict

__all__ = ["DeadmanPinger", "safe_url"]

log = structlog.get_logger(__name__)

MAX_REASON_BYTES = 10_000  # healthchecks keeps the first 10 kB of a ping body


def safe_url(url: str) -> str:
    """`scheme://host[:port]` of `url`, for logs: the path and query may carry the check's secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


class DeadmanPinger:
    """`start`, `stop`. `verdict(lag_s)` is asked at each tick with how late the tick woke up."""

    def __init__(
        self,
        settings: SelfCheckSettings,
        *,
        verdict: Callable[[float], Awaitable[Verdict]],
        metrics: Metrics,
        may_ping: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._ping_url = settings.ping_url.get_secret_value() if settings.ping_url else None
        self._fail_url = settings.fail_url.get_secret_value() if settings.fail_url else None
        self._every_s = settings.ping_every.seconds
        # A ping that hangs must not push the next one past its interval: the switch would see a gap.
        self._timeout_s = min(settings.timeout.seconds, self._every_s)
        self._verdict = verdict
        self._may_ping = may_ping
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.last_result: str | None = None  # ok, fail, skipped, error, standby
        self.last_reason = ""

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._timeout_s, headers={"User-Agent": f"teleops/{teleops.__version__} self-check"}
        )
        self._task = asyncio.create_task(self._forever(), name="selfwatch-pinger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def tick(self, lag_s: float) -> str:
        """One ping decision and request; returns the result counted (ok, fail, skipped, error, standby: another
        replica pings). Never raises."""
        try:
            verdict = await self._verdict(lag_s)
        except Exception as exc:  # deciding failed: that is not healthy
            log.exception("selfwatch.verdict_failed")
            verdict = Verdict(Health.UNHEALTHY, f"internal error while checking health: {type(exc).__name__}")
        if self._may_ping is not None and not await self._may_ping():
            result = "standby"  # the fenced check right before a request: only the lease holder pings
        elif verdict.health is Health.HEALTHY and self._ping_url is not None:
            result = await self._send("GET", self._ping_url, None, ok="ok")
        elif verdict.health is Health.UNHEALTHY and self._fail_url is not None:
            result = await self._send("POST", self._fail_url, verdict.reason, ok="fail")
        else:
            result = "skipped"
        if verdict.health is Health.UNHEALTHY and (result != self.last_result or verdict.reason != self.last_reason):
            log.warning("selfwatch.unhealthy", reason=verdict.reason, ping=result)
        self.last_result, self.last_reason = result, verdict.reason
        self._metrics.count_deadman_ping(result)
        return result

    async def _send(self, method: str, url: str, reason: str | None, *, ok: str) -> str:
        assert self._client is not None
        content = reason.encode()[:MAX_REASON_BYTES] if reason is not None else None
        try:
            answer = await self._client.request(method, url, content=content)
        except httpx.HTTPError as exc:
            # httpx's message may hold the URL: only the class goes to the log.
            log.warning("selfwatch.ping_failed", target=safe_url(url), error=type(exc).__name__,
                        hint="check the switch is reachable from this host (proxy, firewall, DNS)")  # fmt: skip
            return "error"
        if not answer.is_success:
            log.warning("selfwatch.ping_refused", target=safe_url(url), status=answer.status_code,
                        hint="check self_check.ping_url / fail_url (a wrong or deleted check?)")  # fmt: skip
            return "error"
        return ok

    async def _forever(self) -> None:
        due = time.monotonic() + self._every_s
        while True:
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            lag_s = time.monotonic() - due
            await self.tick(lag_s)
            # A period, not a catch-up: after a stall the next ping is one interval from now, never a burst.
            due = max(due + self._every_s, time.monotonic() + self._every_s / 2)
