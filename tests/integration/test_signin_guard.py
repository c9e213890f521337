"""The web sign-in's throttle and lockout as the database counts them (store/signin_guard.py), on SQLite and
PostgreSQL, with explicit times. Two SignInGuards on one database stand for two replicas: what one counts, the
other sees (tests/replicas/test_shared_state.py drives the same through two real `teleops serve`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from teleops.store.database import Database
from teleops.store.signin_guard import FORGET_AFTER, SignInGuard, signin_failures, signin_lockouts

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _guard(db: Database, *, limit: int = 10, lockout_after: int = 5) -> SignInGuard:
    return SignInGuard(db, lockout_after=lockout_after, lockout_for=timedelta(minutes=15), throttle_limit=limit)


async def test_the_eleventh_failure_within_a_minute_is_throttled_until_the_oldest_ages_out(db: Database) -> None:
    guard = _guard(db, lockout_after=100)
    for second in range(10):
        assert await guard.retry_after("admin", "10.0.0.1", now=NOW + timedelta(seconds=second)) is None
        await guard.password_failed("admin", "10.0.0.1", now=NOW + timedelta(seconds=second))
    wait = await guard.retry_after("admin", "10.0.0.1", now=NOW + timedelta(seconds=10))
    assert wait is not None
    assert 50 <= wait <= 51  # the oldest failure (t=0) leaves the window at t=60
    assert await guard.retry_after("admin", "10.0.0.1", now=NOW + timedelta(seconds=61)) is None


async def test_the_throttle_counts_per_user_and_address_and_a_session_clears_it(db: Database) -> None:
    guard = _guard(db, limit=3, lockout_after=100)
    for _ in range(3):
        await guard.password_failed("Admin", "10.0.0.1", now=NOW)
    assert await guard.retry_after("admin", "10.0.0.1", now=NOW) is not None  # user names compare case-blind
    assert await guard.retry_after("admin", "10.0.0.2", now=NOW) is None
    assert await guard.retry_after("alice", "10.0.0.1", now=NOW) is None
    await guard.signed_in("ADMIN", "10.0.0.1")
    assert await guard.retry_after("admin", "10.0.0.1", now=NOW) is None


async def test_failures_older_than_the_window_are_deleted_when_one_is_added(db: Database) -> None:
    guard = _guard(db, limit=3, lockout_after=100)
    for n in range(50):
        await guard.password_failed(f"user{n}", "10.0.0.1", now=NOW)
    await guard.password_failed("late", "10.0.0.1", now=NOW + timedelta(minutes=2))
    assert await db.scalar(select(func.count()).select_from(signin_failures)) == 1


async def test_the_limit_th_failure_in_a_row_locks_for_the_duration_and_a_right_password_resets_the_row(
    db: Database,
) -> None:
    guard = _guard(db, lockout_after=3)
    assert await guard.password_failed("Olga", "a", now=NOW) is None
    await guard.password_right("olga")  # the row is broken: counting starts again
    assert await guard.password_failed("olga", "b", now=NOW) is None
    assert await guard.password_failed("olga", "c", now=NOW) is None
    until = await guard.password_failed("OLGA", "d", now=NOW)  # from any address: the name is locked
    assert until == NOW + timedelta(minutes=15)
    assert await guard.locked_until("olga", now=NOW + timedelta(minutes=14)) == until
    assert await guard.locked_until("olga", now=until) is None
    assert await guard.locked_until("ada", now=NOW) is None
    await guard.password_right("olga")  # a right password does not lift a running lock
    assert await guard.locked_until("olga", now=NOW) == until


async def test_two_guards_on_one_database_count_the_same_failures(db: Database, db_url: str) -> None:
    other_db = Database(db_url)  # another replica's engine
    try:
        one, two = _guard(db, lockout_after=6), _guard(other_db, lockout_after=6)
        # Concurrent failures from both "replicas": every one counts, and exactly the sixth locks.
        results = await asyncio.gather(
            *(
                (one if n % 2 else two).password_failed("eve", f"10.0.0.{n}", now=NOW + timedelta(seconds=n))
                for n in range(6)
            )
        )
        assert sum(1 for until in results if until is not None) == 1
        assert await one.locked_until("eve", now=NOW + timedelta(seconds=10)) is not None
        assert await two.locked_until("eve", now=NOW + timedelta(seconds=10)) is not None
    finally:
        await other_db.close()


async def test_an_untouched_unlocked_name_is_forgotten_after_a_day(db: Database) -> None:
    guard = _guard(db, lockout_after=100)
    await guard.password_failed("made-up-1", "a", now=NOW)
    await guard.password_failed("made-up-2", "a", now=NOW + FORGET_AFTER + timedelta(seconds=1))
    assert await db.scalar(select(func.count()).select_from(signin_lockouts)) == 1
