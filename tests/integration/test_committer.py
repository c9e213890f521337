"""The pipelined group committer (ADR 0003) on a real SQLite file: what it commits survives, whatever other
connections of the same process do meanwhile."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
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
        # The same fsync resolves the commit's own future; the sync thread hands the two to the loop one after the
        # other (waiters first), so under load the waiter may run a loop iteration before the future is set.
        await asyncio.wait_for(commit.durable, timeout=1)
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


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied back into the database file), read from the wal-index without
    touching the database (a `wal_checkpoint` pragma would checkpoint): `mxFrame` at offset 16 of the index
    header, `nBackfill` at offset 96 (SQLite's WAL file format, native byte order)."""
    header = Path(f"{path}-shm").read_bytes()[:100]
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


async def test_commits_never_checkpoint_and_the_checkpointer_does_it_when_the_writer_is_idle(tmp_path: Path) -> None:
    """SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages (5–20 ms of writes and an fsync
    of the database file, paid by that alert): the group-commit connection must never, and the checkpoint thread
    must catch up once the writer is idle."""
    path = tmp_path / "teleops.db"
    db = await _notes_db(path)
    committer = db._committer
    assert committer is not None
    try:
        committer.checkpointer.close()  # hold the checkpointer: only commits could checkpoint now
        held = type(committer.checkpointer)(path, busy_timeout_ms=5000, is_idle=lambda: False, max_wait_s=3600)
        committer.checkpointer = held
        blob = "x" * 5000  # two pages a row: 600 commits write well past SQLite's 1,000-page threshold
        for n in range(600):
            await db.write(_insert, f"{n} {blob}")
        await asyncio.sleep(0.2)
        frames, copied = _wal_frames(path)
        assert frames > 1000  # nothing reset the WAL: no commit checkpointed it
        assert copied == 0
        held.close()

        committer.checkpointer = type(held)(path, busy_timeout_ms=5000, is_idle=committer._idle, every_commits=4)
        for n in range(4):
            await db.write(_insert, f"after {n}")

        async def caught_up() -> bool:
            return committer.checkpointer.checkpoints >= 1

        for _ in range(500):
            if await caught_up():
                break
            await asyncio.sleep(0.01)
        assert committer.checkpointer.checkpoints >= 1
        frames, copied = _wal_frames(path)
        assert frames > 1000
        assert copied == frames
        assert len(await db.read(_values)) == 604
    finally:
        await db.close()


async def test_the_checkpointer_does_not_wait_for_an_idle_moment_forever(tmp_path: Path) -> None:
    """Under a load that never leaves the writer idle the WAL must stay bounded: after `max_wait_s` it checkpoints."""
    path = tmp_path / "teleops.db"
    db = await _notes_db(path)
    committer = db._committer
    assert committer is not None
    try:
        committer.checkpointer.close()
        busy = type(committer.checkpointer)(
            path, busy_timeout_ms=5000, is_idle=lambda: False, every_commits=2, max_wait_s=0.2
        )
        committer.checkpointer = busy
        for n in range(2):
            await db.write(_insert, f"{n}")
        for _ in range(300):
            if busy.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert busy.checkpoints == 1
    finally:
        await db.close()
