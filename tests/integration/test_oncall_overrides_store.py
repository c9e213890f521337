"""Overrides and calendar feeds in the database (store/oncall_overrides.py, store/calendar_feeds.py), on SQLite and
PostgreSQL: stored, merged by the directory, removed, and every change audited in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from teleops.oncall.directory import OnCallDirectory
from teleops.store.audit import audit_events
from teleops.store.calendar_feeds import FeedKind, create_feed, feed_for_secret, revoke_feed
from teleops.store.database import Database
from teleops.store.database import Transaction as Connection
from teleops.store.oncall_overrides import StoredOverride, add_override, live_overrides, remove_override
from tests.settings import settings_with

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def actions(conn: Connection) -> list[tuple[str, str, str]]:
    rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    return [(r.actor, r.action, r.subject) for r in rows]


async def test_an_override_is_stored_merged_removed_and_audited(db: Database, tmp_path: Path) -> None:
    directory = OnCallDirectory(
        settings_with(
            data_dir=tmp_path / "data",
            users=[{"name": "alice", "role": "operator"}, {"name": "bob", "role": "operator"}],
            oncall={"rotations": [{"name": "primary", "members": ["alice", "bob"], "shift": "1d", "handoff": "09:00"}]},
        )
    )
    assert directory.resolve("rotation:primary", NOW).users == ("bob",)

    def add(conn: Connection) -> StoredOverride:
        return add_override(
            conn, rotation="primary", user="alice", start=NOW, end=NOW + timedelta(hours=2), by="root", now=NOW
        )

    made = await db.run_in_transaction(add)
    assert (made.user, made.start, made.end) == ("alice", NOW, NOW + timedelta(hours=2))
    await db.read(directory.load_overrides, NOW)
    assert directory.resolve("rotation:primary", NOW + timedelta(minutes=1)).users == ("alice",)
    assert [o.id for o in await db.read(lambda c: live_overrides(c, ending_after=NOW))] == [made.id]

    removed = await db.run_in_transaction(lambda c: remove_override(c, made.id, by="alice", now=NOW))
    assert removed is not None
    assert removed.id == made.id
    assert await db.run_in_transaction(lambda c: remove_override(c, made.id, by="alice", now=NOW)) is None
    await db.read(directory.load_overrides, NOW)
    assert directory.resolve("rotation:primary", NOW + timedelta(minutes=1)).users == ("bob",)
    assert await db.read(actions) == [
        ("root", "oncall.override_created", "rotation:primary"),
        ("alice", "oncall.override_removed", "rotation:primary"),
    ]


async def test_a_feed_is_found_by_its_secret_only_until_revoked(db: Database) -> None:
    feed, secret = await db.run_in_transaction(lambda c: create_feed(c, FeedKind.USER, "alice", by="alice", now=NOW))
    assert secret.startswith("tlo_cal_")
    found = await db.read(lambda c: feed_for_secret(c, FeedKind.USER, "alice", secret))
    assert found is not None
    assert found.id == feed.id
    assert await db.read(lambda c: feed_for_secret(c, FeedKind.USER, "bob", secret)) is None  # another feed's path
    assert await db.read(lambda c: feed_for_secret(c, FeedKind.USER, "alice", secret + "x")) is None
    assert await db.run_in_transaction(lambda c: revoke_feed(c, feed.id, by="root", now=NOW)) is not None
    assert await db.read(lambda c: feed_for_secret(c, FeedKind.USER, "alice", secret)) is None
    stored = await db.read(lambda c: [tuple(r) for r in c.execute(select(audit_events.c.data)).all()])
    assert all(secret not in str(row) for row in stored), "the secret is never audited"
    assert [a for _, a, _ in await db.read(actions)] == ["calendar_feed.created", "calendar_feed.revoked"]
