"""WAL checkpoints off the commit path: copied back into the database file by a thread of their own, when idle.

SQLite checkpoints automatically inside the COMMIT that takes the WAL past 1,000 pages: that commit then also
writes the pages back into the database file and fsyncs it, 5–20 ms on this disk, and the alert it carried
waits for all of it (one alert in about forty: the B3 p99 in docs/benchmarks.md). The group-commit connection
therefore runs with `wal_autocheckpoint=0`, and this thread checkpoints instead: after every `every_commits`
commits it waits until the writer is idle (no batch queued, none being applied or fsynced) and runs a PASSIVE
checkpoint on its own connection, which never blocks readers or the writer. Under a load that never leaves the
writer idle it checkpoints after `max_wait_s` anyway, so the WAL stays bounded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["WalCheckpointer"]

log = structlog.get_logger(__name__)

EVERY_COMMITS = 64
MAX_WAIT_S = 5.0
_IDLE_POLL_S = 0.002


class WalCheckpointer:
    """`committed()` after each commit; `close()` at shutdown. Checkpoint failures are logged, never raised:
    SQLite's own checkpoint (on other connections, and at the last close) still bounds the WAL."""

    def __init__(
        self,
        database: Path,
        *,
        busy_timeout_ms: int,
        is_idle: Callable[[], bool],
        every_commits: int = EVERY_COMMITS,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self._database = database
        self._busy_timeout_ms = busy_timeout_ms
        self._is_idle = is_idle
        self._every = every_commits
        self._max_wait_s = max_wait_s
        self._commits = 0
        self._due = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed checkpoints, for tests and curiosity

    def committed(self) -> None:
        """Count a commit (writer thread); every `every_commits`-th makes a checkpoint due."""
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="teleops-sqlite-checkpoint", daemon=True)
                self._thread.start()
            self._due.set()

    def close(self) -> None:
        self._stopping = True
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                deadline = time.monotonic() + self._max_wait_s
                while not self._is_idle() and time.monotonic() < deadline and not self._stopping:
                    time.sleep(_IDLE_POLL_S)
                if self._stopping:
                    return
                try:
                    if connection is None:
                        connection = sqlite3.connect(self._database, timeout=self._busy_timeout_ms / 1000)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    log.warning("sqlite.checkpoint_failed", error=str(exc))
        finally:
            if connection is not None:
                connection.close()
