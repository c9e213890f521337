"""Whether TeleOps may tell the outside world it is healthy: the pure decision behind every dead-man's-switch ping.

Healthy means all of: the last self-test passed, it is recent (its loop has not died or hung), and the liveness
check made at ping time passed (the event loop woke up on time and the database took a durable write just now).
Anything else is unhealthy with one reason, said for the person who reads the switch's log; before the first
self-test has finished there is nothing to say yet ("unknown": no ping of either kind).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Health", "Liveness", "SelfTestResult", "StepResult", "Verdict", "decide", "overdue"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step of a self-test: its name (storage, ingest, outbox, or a platform) and why it failed (None: passed)."""

    step: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class SelfTestResult:
    """One self-test run: when it finished and how each step went (every step runs, whatever failed before)."""

    at: datetime
    steps: tuple[StepResult, ...] = ()

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def failures(self) -> tuple[StepResult, ...]:
        return tuple(step for step in self.steps if not step.ok)

    def describe(self) -> str:
        """Each failed step with its reason ("ok" when none), for logs, the fail ping and the incident."""
        return "; ".join(f"{step.step}: {step.error}" for step in self.failures) or "ok"


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the pinger saw just before a ping: how late its timer fired, and the database write's error if any."""

    loop_lag_s: float
    storage_error: str | None = None


class Health(enum.StrEnum):
    HEALTHY = "healthy"  # ping ping_url
    UNHEALTHY = "unhealthy"  # ping fail_url (if set) with the reason
    UNKNOWN = "unknown"  # no self-test has finished yet: ping nothing


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    reason: str = ""


def overdue(last: SelfTestResult, *, now: datetime, every: timedelta, timeout: timedelta) -> bool:
    """Whether the self-test should have run again since `last`: two periods and one step timeout have passed."""
    return now - last.at > 2 * every + timeout


def decide(
    last: SelfTestResult | None,
    liveness: Liveness,
    *,
    now: datetime,
    self_test_every: timedelta,
    timeout: timedelta,
    max_loop_lag_s: float,
) -> Verdict:
    """The verdict for one ping. Liveness problems come first: they are about this very moment."""
    if liveness.loop_lag_s > max_loop_lag_s:
        return Verdict(
            Health.UNHEALTHY,
            f"the event loop woke {liveness.loop_lag_s:.1f}s late (limit {max_loop_lag_s:.1f}s): the controller is "
            "blocked or starved; see its log and CPU",
        )
    if liveness.storage_error is not None:
        return Verdict(Health.UNHEALTHY, f"storage: {liveness.storage_error}")
    if last is None:
        return Verdict(Health.UNKNOWN, "no self-test has finished yet")
    if overdue(last, now=now, every=self_test_every, timeout=timeout):
        age = (now - last.at).total_seconds()
        return Verdict(
            Health.UNHEALTHY,
            f"the self-test last finished {age:.0f}s ago (it runs every {self_test_every.total_seconds():.0f}s): "
            "its loop is stuck or dead; restart the controller and report its log",
        )
    if not last.ok:
        return Verdict(Health.UNHEALTHY, f"self-test failed: {last.describe()}")
    return Verdict(Health.HEALTHY)
