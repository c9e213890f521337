"""The health decision behind each dead-man's-switch ping (server/selfwatch/health.py): pure, so every case is
checked here without a clock or a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from teleops.server.selfwatch.health import Health, Liveness, SelfTestResult, StepResult, decide

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
EVERY = timedelta(minutes=5)
TIMEOUT = timedelta(seconds=10)
PASSED = SelfTestResult(NOW - timedelta(minutes=1), (StepResult("storage"), StepResult("telegram")))
LIVE = Liveness(loop_lag_s=0.01)


def verdict(last: SelfTestResult | None, liveness: Liveness = LIVE, *, now: datetime = NOW) -> tuple[Health, str]:
    found = decide(last, liveness, now=now, self_test_every=EVERY, timeout=TIMEOUT, max_loop_lag_s=10.0)
    return found.health, found.reason


def test_a_recent_passed_self_test_and_a_live_process_are_healthy() -> None:
    assert verdict(PASSED) == (Health.HEALTHY, "")


def test_before_the_first_self_test_nothing_is_claimed_either_way() -> None:
    assert verdict(None)[0] is Health.UNKNOWN


def test_a_failed_step_is_unhealthy_and_the_reason_names_every_failed_step() -> None:
    failed = SelfTestResult(
        NOW, (StepResult("storage"), StepResult("telegram", "getMe failed: InvalidToken"), StepResult("slack", "x"))
    )
    health, reason = verdict(failed)
    assert health is Health.UNHEALTHY
    assert reason == "self-test failed: telegram: getMe failed: InvalidToken; slack: x"


def test_a_database_that_cannot_take_a_write_now_stops_the_ok_ping_even_after_a_passed_self_test() -> None:
    health, reason = verdict(PASSED, Liveness(0.0, storage_error="database is locked"))
    assert (health, reason) == (Health.UNHEALTHY, "storage: database is locked")


def test_an_event_loop_that_woke_late_is_unhealthy_and_comes_before_everything_else() -> None:
    health, reason = verdict(None, Liveness(loop_lag_s=42.0, storage_error="disk full"))
    assert health is Health.UNHEALTHY
    assert reason.startswith("the event loop woke 42.0s late (limit 10.0s)")


def test_a_lag_at_the_limit_is_still_healthy() -> None:
    assert verdict(PASSED, Liveness(loop_lag_s=10.0))[0] is Health.HEALTHY


@pytest.mark.parametrize(
    ("age", "health"),
    [(2 * EVERY + TIMEOUT, Health.HEALTHY), (2 * EVERY + TIMEOUT + timedelta(seconds=1), Health.UNHEALTHY)],
)
def test_a_passed_self_test_that_is_not_renewed_goes_stale(age: timedelta, health: Health) -> None:
    last = SelfTestResult(NOW - age, (StepResult("storage"),))
    found, reason = verdict(last)
    assert found is health
    if health is Health.UNHEALTHY:
        assert "its loop is stuck or dead" in reason
