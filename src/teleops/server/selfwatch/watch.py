"""SelfWatch: the self-test schedule and the dead-man's-switch pinger of one controller, started by the lifespan.

The self-test runs a few seconds after start, then every `self_check.self_test_every`. The pinger runs only when
`ping_url` or `fail_url` is set; at each tick it makes a liveness check of its own (the event loop's lateness and a
durable database write, under `self_check.timeout`) and combines it with the last self-test (health.py).

With `singletons`, the pings are the "deadman-pinger" singleton: one replica pings the switch (each ping right after
a fenced lease check); the self-test still runs in every replica, since each tests its own path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from teleops.chat.service import ChatService
from teleops.config.self_check import SelfCheckSettings
from teleops.server.metrics import Metrics
from teleops.server.selfwatch.health import Liveness, SelfTestResult, Verdict, decide, overdue
from teleops.server.selfwatch.pinger import DeadmanPinger
from teleops.server.selfwatch.self_test import SelfTest
from teleops.server.singletons import Singletons
from teleops.store.database import Database, StorageUnavailable
from teleops.store.ingest import IngestWriter
from teleops.store.self_check import write_liveness_mark

__all__ = ["DEADMAN_PINGER", "SelfWatch"]

log = structlog.get_logger(__name__)

DEADMAN_PINGER = "deadman-pinger"  # the singleton lease of the dead-man's-switch pings
FIRST_SELF_TEST_AFTER_S = 5.0  # once the rest of the lifespan has started and the app serves


class SelfWatch:
    """`start`, `stop`; `detail()` for /readyz; `verdict(lag_s)` for each ping."""

    def __init__(
        self,
        settings: SelfCheckSettings,
        *,
        db: Database,
        ingest: IngestWriter,
        chat: ChatService | None,
        metrics: Metrics,
        clock: Callable[[], datetime],
        host: str | None = None,
        singletons: Singletons | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._host = host or socket.gethostname()
        self._every = settings.self_test_every.timedelta
        self._timeout = settings.timeout.timedelta
        self.self_test = SelfTest(
            settings, db=db, ingest=ingest, chat=chat, metrics=metrics, clock=clock, host=self._host
        )
        pings = settings.ping_url is not None or settings.fail_url is not None
        self.pinger: DeadmanPinger | None = None
        if pings:
            may_ping = None
            if singletons is not None:
                singletons.add(DEADMAN_PINGER)

                async def may_ping() -> bool:
                    return await singletons.confirm(DEADMAN_PINGER) is not None

            self.pinger = DeadmanPinger(settings, verdict=self.verdict, metrics=metrics, may_ping=may_ping)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.self_test.start()
        self._task = asyncio.create_task(self._self_test_forever(), name="selfwatch-self-test")
        if self.pinger is not None:
            self.pinger.start()

    async def stop(self) -> None:
        if self.pinger is not None:
            await self.pinger.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.self_test.stop()

    async def verdict(self, lag_s: float) -> Verdict:
        """Healthy or not, right now: the liveness check runs here, at ping time."""
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout.total_seconds()):
                # What /readyz checks (a nearly full disk, a read-only file or standby), then a real durable write.
                error = await self._db.write_problem()
                if error is None:
                    await write_liveness_mark(self._db, self._host, now=self._clock())
        except TimeoutError:
            error = f"a write did not finish within {self._timeout.total_seconds():g}s (locked or stalled database)"
        except (StorageUnavailable, RuntimeError) as exc:
            error = f"the database cannot take a write: {exc}"
        return decide(
            self.self_test.last,
            Liveness(loop_lag_s=max(lag_s, 0.0), storage_error=error),
            now=self._clock(),
            self_test_every=self._every,
            timeout=self._timeout,
            max_loop_lag_s=self._timeout.total_seconds(),
        )

    def detail(self) -> dict[str, object]:
        """The `self_test` part of /readyz: status, when, each step's outcome, and the pinger's last result."""
        last = self.self_test.last
        view: dict[str, object] = {"status": _status(last, now=self._clock(), every=self._every, timeout=self._timeout)}
        if last is not None:
            view["at"] = last.at.isoformat()
            view["steps"] = {step.step: step.error or "ok" for step in last.steps}
            view["failed_runs"] = self.self_test.failed_runs
        success = self.self_test.last_success_at
        view["last_success_at"] = success.isoformat() if success is not None else None
        if self.pinger is not None:
            view["deadman"] = {"last": self.pinger.last_result, "reason": self.pinger.last_reason or None}
        return view

    async def _self_test_forever(self) -> None:
        await asyncio.sleep(min(FIRST_SELF_TEST_AFTER_S, self._every.total_seconds()))
        while True:
            try:
                await self.self_test.run()
            except Exception:  # run() never raises; if a bug makes it, the loop must go on (and pings say overdue)
                log.exception("selfwatch.self_test_crashed")
            await asyncio.sleep(self._every.total_seconds())  # a period, not a wait for a condition


def _status(last: SelfTestResult | None, *, now: datetime, every: timedelta, timeout: timedelta) -> str:
    if last is None:
        return "pending"
    if overdue(last, now=now, every=every, timeout=timeout):
        return "overdue"
    return "ok" if last.ok else "failed"
