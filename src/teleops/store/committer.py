"""Pipelined group commit on SQLite: one writer thread applies and commits, one sync thread makes commits durable.

A batch is applied and committed on one long-lived connection with `synchronous=NORMAL` (in WAL mode the
commit writes its frames to the WAL but does not fsync it), then handed to the sync thread, which fsyncs
the WAL file once for every commit that finished meanwhile and only then resolves their futures. While
that fsync runs, the writer already applies the next batch: the disk flush overlaps the work instead of
serialising with it. When nothing else is queued or being synced, the writer fsyncs the commit itself instead
(a hand-over would only add a thread wake-up). Durability is that of `synchronous=FULL` for the caller, who waits
for `durable`: the WAL frames of its commit are on stable storage before it answers (docs/adr/0003).

A reader that saw committed rows without holding their `Commit` (the outbox worker reading what an ingest
wrote) takes a `durable_mark()` after its read and awaits `wait_durable(mark)` before it announces them:
every batch submitted up to the mark is then on disk, so the read's work overlaps the fsync too.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.engine import Connection, Engine

from teleops.store.checkpointer import WalCheckpointer

__all__ = ["Commit", "PipelinedCommitter"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Commit(Generic[T]):
    """The two moments of one batch: `applied` (committed, visible, survives a process crash) and
    `durable` (its WAL frames fsynced: survives power loss). Callers answer 2xx after `durable` only."""

    applied: asyncio.Future[T]
    durable: asyncio.Future[None]


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    commit: Commit[Any]
    seq: int
    result: Any = field(default=None)


def resolve(future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Complete `future` unless it is done already (its waiter may have been cancelled meanwhile)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class PipelinedCommitter:
    """Runs `fn(connection, *args)` batches in order on one connection, fsyncs the WAL out of line."""

    def __init__(
        self,
        engine: Engine,
        database: Path,
        translate: Callable[[BaseException], BaseException],
        *,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """`engine`'s connections must run with `wal_autocheckpoint=0`: checkpoints are `WalCheckpointer`'s."""
        self._engine = engine
        self._wal_path = Path(f"{database}-wal")
        self.checkpointer = WalCheckpointer(database, busy_timeout_ms=busy_timeout_ms, is_idle=self._idle)
        self._busy = False  # the writer holds a batch (applying, committing, or fsyncing it inline)
        self._translate = translate  # driver errors -> StorageUnavailable, decided by Database
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._syncs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._wal_fd: int | None = None
        self._wal_inode: int | None = None
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._syncing = 0  # batches handed to the sync thread and not yet reported durable
        # Loop side: batches are numbered as submitted; `_durable_seq` is the highest number known fsynced.
        self._submitted = 0
        self._durable_seq = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failed: tuple[int, BaseException] | None = None  # the last fsync's failure, until one succeeds

    def submit(self, fn: Callable[..., T], *args: Any) -> Commit[T]:
        """Queue one batch; returns at once with its two futures (set on the calling loop)."""
        loop = asyncio.get_running_loop()
        commit: Commit[T] = Commit(loop.create_future(), loop.create_future())
        self._start()
        self._submitted += 1
        self._jobs.put(_Job(fn, args, loop, commit, self._submitted))
        return commit

    def durable_mark(self) -> int:
        """The number of the last batch submitted so far (see `wait_durable`)."""
        return self._submitted

    async def wait_durable(self, mark: int) -> None:
        """Return once every batch up to `mark` is durable (or failed to apply: nothing of it to lose).
        Raises StorageUnavailable when the fsync covering them failed."""
        if mark <= self._durable_seq:
            return
        if self._failed is not None and mark <= self._failed[0]:
            raise self._failed[1]  # the last fsync covering it failed, and none has succeeded since
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((mark, waiter))
        await waiter

    def _synced(self, seq: int, error: BaseException | None) -> None:
        """Loop side, after an fsync of every batch up to `seq`: wake the waiters it covers."""
        if error is None:
            self._durable_seq = max(self._durable_seq, seq)
            self._failed = None
        else:
            self._failed = (seq, error)
        covered = [w for w in self._waiters if w[0] <= seq]
        self._waiters = [w for w in self._waiters if w[0] > seq]
        for _mark, waiter in covered:
            resolve(waiter, None, error)

    def _idle(self) -> bool:
        """No batch queued, being applied, or waiting for its fsync (read from the checkpoint thread)."""
        return not self._busy and self._syncing == 0 and self._jobs.empty()

    def close(self) -> None:
        """Finish queued batches, stop the threads, close the WAL descriptor."""
        with self._lock:
            threads, self._threads = self._threads, []
        if threads:
            self._jobs.put(None)
            for thread in threads:
                thread.join(timeout=30)
        self.checkpointer.close()
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._write_loop, name="teleops-sqlite-writer", daemon=True),
                threading.Thread(target=self._sync_loop, name="teleops-sqlite-sync", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def _write_loop(self) -> None:
        conn: Connection | None = None
        try:
            while (job := self._jobs.get()) is not None:
                self._busy = True
                try:
                    if conn is None:
                        conn = self._engine.connect()
                    with conn.begin():
                        job.result = job.fn(conn, *job.args)
                except BaseException as exc:  # every failure goes to the waiting request
                    error = self._translate(exc)
                    job.loop.call_soon_threadsafe(resolve, job.commit.applied, None, error)
                    # Nothing to make durable; cancelled (not failed) so nobody must retrieve an exception.
                    job.loop.call_soon_threadsafe(job.commit.durable.cancel)
                    self._make_durable(job)  # still counted, so `wait_durable` moves past it
                    if conn is not None and conn.invalidated:
                        conn.close()
                        conn = None
                    self._busy = False
                    continue
                job.loop.call_soon_threadsafe(resolve, job.commit.applied, job.result)
                self._make_durable(job)
                self._busy = False
                self.checkpointer.committed()
        finally:
            self._syncs.put(None)
            if conn is not None:
                conn.close()

    def _make_durable(self, job: _Job) -> None:
        """After a commit: fsync it here when nothing else is going on, else hand it to the sync thread.

        Idle (no batch waiting, no fsync running), a hand-over only adds a thread wake-up and a wait for the GIL,
        which the event loop holds while it prepares what the commit announces (~1 ms at the median, more in
        the tail: B3 in docs/benchmarks.md); the fsync releases the GIL, so the loop prepares meanwhile. Busy,
        the sync thread fsyncs while this thread applies the next batch (the pipeline).
        """
        with self._sync_lock:
            inline = self._syncing == 0 and self._jobs.empty()
            if not inline:
                self._syncing += 1
        if inline:
            self._sync([job])
        else:
            self._syncs.put(job)

    def _sync_loop(self) -> None:
        stopping = False
        while not stopping:
            job = self._syncs.get()
            if job is None:
                return
            jobs = [job]
            # Every commit that finished while the previous fsync ran shares this one.
            while True:
                try:
                    more = self._syncs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                jobs.append(more)
            self._sync(jobs)
            with self._sync_lock:  # after `_sync` reported them: an fsync in the writer reports later batches
                self._syncing -= len(jobs)

    def _sync(self, jobs: list[_Job]) -> None:
        """fsync the WAL once for `jobs` (committed in this order, every earlier batch already durable), then
        report them durable (or the fsync's failure)."""
        error: BaseException | None = None
        try:
            self._fsync_wal()
        except OSError as exc:
            log.error("sqlite.wal_fsync_failed", error=str(exc))
            error = self._translate(exc)
        # Readers waiting to announce (the chat outbox) first, then the batches' own callers (2xx answers):
        # the loop runs callbacks in order, so a message leaves before the answers are written.
        last = jobs[-1]
        last.loop.call_soon_threadsafe(self._synced, last.seq, error)
        for done in jobs:
            done.loop.call_soon_threadsafe(resolve, done.commit.durable, None, error)

    def _fsync_wal(self) -> None:
        """fdatasync the WAL file; reopen it when SQLite replaced it.

        The main database file is never opened here: closing any descriptor of it would drop every POSIX lock
        this process holds on it (SQLite's own connections' included), and a connection that then believes
        it is the last one checkpoints and deletes the WAL under the others (seen as "disk I/O error" and
        lost commits). Nor is that needed: with synchronous=NORMAL SQLite syncs the WAL before a checkpoint
        and the main file after it, so frames that left a replaced or deleted WAL are already durable.
        """
        try:
            inode: int | None = os.stat(self._wal_path).st_ino
        except FileNotFoundError:
            inode = None
        if self._wal_fd is not None and inode != self._wal_inode:
            os.close(self._wal_fd)  # SQLite locks the main file and the -shm file, never the WAL
            self._wal_fd = None
            self._wal_inode = None
        if inode is None:
            return
        if self._wal_fd is None:
            self._wal_fd = os.open(self._wal_path, os.O_RDONLY)
            self._wal_inode = os.fstat(self._wal_fd).st_ino
        os.fdatasync(self._wal_fd)
