"""The pipelined group committer (ADR 0003) on a real SQLite file: what it commits survives, whatever other
connections of the same process do meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from teleops.store.database import Database, StorageUnavailable


def _insert(conn: Connection, value: str) -> None:
    conn.execute(text("INSERT INTO notes (value) VALUES (:value)"), {"value": value})


def _values(conn: Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute(text("SELECT value FROM notes ORDER BY id"))]


async def test_commits_survive_another_connection_of_the_process_closing(tmp_path: Path) -> None:
    """Regression: the WAL fsync once opened and closed the main database file, which dropped every POSIX lock
    the process held on it; the next connection to close then thought it was the last one, checkpointed and
    deleted the WAL while the committer kept writing into the unlinked file, and those commits were lost
    (a controller restarted mid-escalation came back with an empty database). SQLite documents the pitfall:
    "POSIX advisory locks canceled by a separate thread doing close()"."""
    path = tmp_path / "teleops.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.run_in_transaction(lambda conn: conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, value)")))
    await db.write(_insert, "first")  # the first fsync of the WAL

    # Another process opens the database and closes it again (`teleops audit verify`, a backup, sqlite3).
    # It must find the controller still holding its locks, so it neither checkpoints nor deletes the WAL.
    peek = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT count(*) FROM notes').fetchone()[0]); c.close()"
    )
    seen = subprocess.run([sys.executable, "-c", peek, str(path)], capture_output=True, text=True, check=True)
    assert seen.stdout.strip() == "1"

    await db.write(_insert, "second")
    await db.run_in_transaction(_insert, "third")
    assert await db.read(_values) == ["first", "second", "third"]
    await db.close()

    reopened = sqlite3.connect(path)
    try:
        assert [row[0] for row in reopened.execute("SELECT value FROM notes ORDER BY id")] == [
            "first",
            "second",
            "third",
        ]
    finally:
        reopened.close()


def _gate_fsync(db: Database, monkeypatch: Any) -> threading.Event:
    """Hold every WAL fsync of `db`'s committer until the returned event is set."""
    committer = db._committer
    assert committer is not None
    gate = threading.Event()
    real = committer._fsync_wal

    def gated() -> None:
        gate.wait(timeout=30)
        real()

    monkeypatch.setattr(committer, "_fsync_wal", gated)
    return gate


async def _notes_db(path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.run_in_transaction(lambda conn: conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, value)")))
    return db


async def test_wait_durable_returns_only_after_the_fsync_of_what_was_read(tmp_path: Path, monkeypatch: Any) -> None:
    db = await _notes_db(tmp_path / "teleops.db")
    try:
        gate = _gate_fsync(db, monkeypatch)
        commit = db.submit_batch(_insert, "seen before its fsync")
        await commit.applied
        assert await db.read(_values) == ["seen before its fsync"]  # visible to a reader already
        mark = db.durable_mark()
        waiting = asyncio.create_task(db.wait_durable(mark))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert not commit.durable.done()
        gate.set()
        await asyncio.wait_for(waiting, timeout=10)
        assert commit.durable.done()
        await db.wait_durable(db.durable_mark())  # nothing new since: returns at once
    finally:
        await db.close()


async def test_wait_durable_moves_past_a_batch_that_failed_and_reports_a_failed_fsync(
    tmp_path: Path, monkeypatch: Any
) -> None:
    db = await _notes_db(tmp_path / "teleops.db")
    try:

        def broken(conn: Connection) -> None:
            conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

        failed = db.submit_batch(broken)
        with pytest.raises(StorageUnavailable):
            await failed.applied
        await asyncio.wait_for(db.wait_durable(db.durable_mark()), timeout=10)  # nothing of it to wait for

        committer = db._committer
        assert committer is not None

        def failing_fsync() -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(committer, "_fsync_wal", failing_fsync)
        commit = db.submit_batch(_insert, "not on disk")
        await commit.applied
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(db.wait_durable(db.durable_mark()), timeout=10)
        with pytest.raises(StorageUnavailable):
            await commit.durable
    finally:
        await db.close()


async def test_write_unsynced_returns_at_the_commit_and_a_later_barrier_covers_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    db = await _notes_db(tmp_path / "teleops.db")
    try:
        gate = _gate_fsync(db, monkeypatch)
        await asyncio.wait_for(db.write_unsynced(_insert, "queued message"), timeout=10)  # the fsync is held
        mark = db.durable_mark()
        waiting = asyncio.create_task(db.wait_durable(mark))  # what the outbox worker does before the call
        await asyncio.sleep(0.2)
        assert not waiting.done()
        gate.set()
        await asyncio.wait_for(waiting, timeout=10)
        assert await db.read(_values) == ["queued message"]
    finally:
        await db.close()
