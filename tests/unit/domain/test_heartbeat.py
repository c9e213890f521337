"""The due-time rule of heartbeats in (domain/heartbeat.py), including the restart rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.domain.heartbeat import HeartbeatState, HeartbeatTiming, age_text, due_at, state_of

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def timing(*, last_ping_at: datetime | None, created_at: datetime = T0) -> HeartbeatTiming:
    return HeartbeatTiming(interval=5 * MIN, grace=MIN, created_at=created_at, last_ping_at=last_ping_at)


def test_a_heartbeat_is_due_interval_plus_grace_after_its_last_ping() -> None:
    pinged = T0 + 10 * MIN
    assert due_at(timing(last_ping_at=pinged), started_at=T0) == pinged + 6 * MIN


def test_a_heartbeat_that_never_pinged_is_due_interval_plus_grace_after_it_was_defined() -> None:
    assert due_at(timing(last_ping_at=None, created_at=T0 + MIN), started_at=T0) == T0 + 7 * MIN


def test_after_a_restart_nothing_is_due_before_one_interval_since_the_start() -> None:
    # The last ping is hours old (the controller was down), yet the first page may come only 5m after the start.
    started = T0 + timedelta(hours=3)
    assert due_at(timing(last_ping_at=T0), started_at=started) == started + 5 * MIN


def test_a_recent_ping_wins_over_the_restart_rule_when_it_is_later() -> None:
    started = T0
    pinged = T0 + 2 * MIN  # due at 8m, later than start + interval (5m)
    assert due_at(timing(last_ping_at=pinged), started_at=started) == T0 + 8 * MIN


def test_state_is_new_until_the_first_ping_and_late_once_missed() -> None:
    assert state_of(last_ping_at=None, late=False) is HeartbeatState.NEW
    assert state_of(last_ping_at=T0, late=False) is HeartbeatState.UP
    assert state_of(last_ping_at=T0, late=True) is HeartbeatState.LATE
    assert state_of(last_ping_at=None, late=True) is HeartbeatState.LATE


def test_ages_read_like_people_write_them() -> None:
    assert [age_text(s) for s in (0, 42, 300, 3600, 3600 + 600, 86400, 2 * 86400 + 4 * 3600)] == [
        "0s",
        "42s",
        "5m",
        "1h",
        "1h 10m",
        "1d",
        "2d 4h",
    ]
