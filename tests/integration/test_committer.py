"""The pipelined group committer (ADR 0003) on a real SQLite file: what it commits survives, whatever other
connections of the same process do meanwhile."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Connection, text

from teleops.store.database import Database


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
