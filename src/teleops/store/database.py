"""Engine creation, SQLite tuning, migrations, and the storage-unavailable error."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from teleops.store.committer import Commit, PipelinedCommitter, resolve
from teleops.store.work_leases import DEFAULT_WORK_LEASE, REPLICA_OPTION, WORK_LEASE_OPTION

if TYPE_CHECKING:
    from teleops.config.settings import DatabaseSettings
    from teleops.store.sealed_argv import ArgvVault

__all__ = [
    "MIGRATION_LOCK",
    "Commit",
    "Database",
    "NotDurable",
    "SchemaTooNew",
    "StorageUnavailable",
    "Transaction",
    "known_revisions",
    "newest_revision",
]

# The connection of an open transaction, as other packages name it in type hints: they pass it to store
# functions and never use it themselves (only `store` speaks SQL).
Transaction = Connection

T = TypeVar("T")

log = structlog.get_logger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"

# The PostgreSQL advisory lock (two-key form: TeleOps' namespace, then 1 for "migrations") that `migrate` holds for
# its transaction, so replicas starting at once migrate one after the other: the first applies the migrations, the
# next find the schema current. The two-key space does not meet the one-key (bigint) locks of the singletons.
MIGRATION_LOCK = (0x7E1E0, 1)


class StorageUnavailable(Exception):
    """The database could not take the write (locked, full, gone). Callers answer 503 and retry later."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer TeleOps (its revision is not among this version's migrations), so this
    version must not run on it or migrate it: it would read columns it does not know the rules of."""

    def __init__(self, found: str, newest: str) -> None:
        super().__init__(
            f"the database schema is at revision {found}, which this TeleOps does not know (its newest is {newest}): "
            "a newer TeleOps has migrated it. Upgrade this replica to the version the others run (docs/replicas.md, "
            '"Rolling upgrades"); nothing was changed'
        )
        self.found = found
        self.newest = newest


class NotDurable(StorageUnavailable):
    """`Database.write`: the transaction committed (`applied` is fn's result) but could not be made durable (the
    WAL fsync failed). Its effects are visible now and may be lost at a power cut: undo or fail what depends on it."""

    def __init__(self, message: str, applied: Any) -> None:
        super().__init__(message)
        self.applied = applied


class Database:
    """One engine for the process. SQLite: WAL, busy timeout, fsync on commit. PostgreSQL: a pool."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000, work_lease: timedelta = DEFAULT_WORK_LEASE) -> None:
        self.url = url
        # How long a replica's claim on a work row (an outbox row, a heartbeat check) holds without a renewal.
        self.work_lease = work_lease
        # This process among the controller replicas sharing the database: claims, leases and agent connections
        # are recorded under it. Unique per start (a restarted process is a new replica), readable in logs.
        self.replica = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._file: Path | None = None  # the SQLite file, for `write_problem`
        # Every connection carries the replica name, for store functions that claim work given only a Connection
        # (store/work_leases.py).
        named = {REPLICA_OPTION: self.replica, WORK_LEASE_OPTION: work_lease}
        kwargs: dict[str, Any] = {"execution_options": named}
        if self.is_sqlite:
            database = parsed.database or ""
            self._file = Path(database) if database and database != ":memory:" else None
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                _create_private(Path(database))
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # Redacts and seals command lines (store/sealed_argv.py); the controller sets it, tools may leave it None.
        self.argv_vault: ArgvVault | None = None
        self._sync_engine: Engine | None = None
        self._committer: PipelinedCommitter | None = None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout_ms))
            # Batched hot paths run in one worker thread on the stdlib driver: one thread hop per
            # batch instead of one per statement (docs/architecture.md, "Performance design": group commit).
            self._sync_engine = create_engine(
                parsed.set(drivername="sqlite+pysqlite"),
                connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
                execution_options=named,
            )
            event.listen(self._sync_engine, "connect", _sqlite_pragmas(busy_timeout_ms))
            if database and database != ":memory:":
                # The group-committed ingest path: its own connection, WAL fsynced out of line (ADR 0003).
                batch_engine = create_engine(
                    parsed.set(drivername="sqlite+pysqlite"),
                    connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
                    execution_options=named,
                )
                batch_pragmas = _sqlite_pragmas(busy_timeout_ms, synchronous="NORMAL", autocheckpoint=False)
                event.listen(batch_engine, "connect", batch_pragmas)
                self._committer = PipelinedCommitter(
                    batch_engine, Path(database), _storage_error, busy_timeout_ms=busy_timeout_ms
                )

    async def run_in_transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in one committed transaction, with no await between statements.

        SQLite: in a worker thread on the stdlib driver. PostgreSQL: through the async driver.
        Raises StorageUnavailable when the database refuses (locked past the busy timeout, full, gone).
        """
        try:
            if self._sync_engine is not None:
                return await asyncio.to_thread(self._run_sync, fn, *args)
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn, *args)
        except IntegrityError:
            raise  # a constraint said no: the caller decides (retry, or a conflict), not "storage down"
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageUnavailable(_short(exc)) from exc

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """`run_in_transaction` through the group committer (`submit_batch`): returns once the transaction is
        committed *and* durable. On a SQLite file, writes from many callers then share one fsync and never
        wait for each other's write lock; elsewhere it is `run_in_transaction`. Same errors, plus NotDurable
        when it committed but its fsync failed."""
        if self._committer is None:
            return await self.run_in_transaction(fn, *args)
        commit = self.submit_batch(fn, *args)
        result = await commit.applied
        try:
            await commit.durable
        except StorageUnavailable as exc:
            raise NotDurable(str(exc), result) from exc
        return result

    async def write_unsynced(self, fn: Callable[..., T], *args: Any) -> T:
        """`write`, but returns once the transaction is committed (visible; it survives a process crash) without
        waiting for its fsync. For writes that announce nothing themselves: what they lead to is made durable
        later in the same write-ahead log (a dispatch, an outbox row whose worker waits with `wait_durable`
        before the platform call), and the WAL is synced in commit order, so that covers them too."""
        commit = self.submit_batch(fn, *args)
        commit.durable.add_done_callback(_log_not_durable)
        return await commit.applied

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` on one consistent snapshot and return its result (nothing is written).

        SQLite: one worker-thread hop on the stdlib driver, where the async driver pays a thread hop per
        statement and per fetch (about 1 ms for a one-row read on a busy loop). PostgreSQL: the async driver.
        Raises StorageUnavailable when the database does not answer.
        """
        try:
            if self._sync_engine is not None:
                return await asyncio.to_thread(self._read_sync, fn, *args)
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn, *args)
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageUnavailable(_short(exc)) from exc

    async def all(self, query: Executable) -> Sequence[Row[Any]]:
        """The rows of one SELECT (see `read`)."""
        return await self.read(_all, query)

    async def first(self, query: Executable) -> Row[Any] | None:
        """The first row of one SELECT, or None (see `read`)."""
        return await self.read(_first, query)

    async def scalar(self, query: Executable) -> Any:
        """The first column of the first row of one SELECT, or None (see `read`)."""
        return await self.read(_scalar, query)

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> Database:
        """The database `database:` in teleops.yaml names, with its busy timeout and work lease."""
        return cls(settings.url, busy_timeout_ms=settings.busy_timeout_ms, work_lease=settings.work_lease.timedelta)

    def submit_batch(self, fn: Callable[..., T], *args: Any) -> Commit[T]:
        """Start `fn(connection, *args)` in one transaction; returns at once with two futures.

        `applied` gets fn's result once the transaction committed (or its error: IntegrityError as is,
        StorageUnavailable when the database refuses). `durable` completes once the commit is on stable
        storage, or fails with StorageUnavailable; it is cancelled when `applied` failed. Answer 2xx only
        after `durable`. SQLite files: pipelined (the next batch is applied while this one's fsync runs);
        otherwise both complete at the commit.
        """
        if self._committer is not None:
            return self._committer.submit(fn, *args)
        loop = asyncio.get_running_loop()
        commit: Commit[T] = Commit(loop.create_future(), loop.create_future())

        def settle(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                commit.applied.cancel()
                commit.durable.cancel()
            elif (error := task.exception()) is not None:
                resolve(commit.applied, error=error)
                commit.durable.cancel()
            else:
                resolve(commit.applied, task.result())
                resolve(commit.durable)

        task = loop.create_task(self.run_in_transaction(fn, *args))
        task.add_done_callback(settle)
        return commit

    def durable_mark(self) -> int:
        """Taken after a read: `wait_durable(mark)` then returns once everything that read saw is durable."""
        return self._committer.durable_mark() if self._committer is not None else 0

    async def wait_durable(self, mark: int) -> None:
        """Wait until every write submitted before `durable_mark()` returned `mark` is on stable storage
        (at once where commits are durable as they complete). Raises StorageUnavailable when its fsync failed."""
        if self._committer is not None:
            await self._committer.wait_durable(mark)

    def _run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return fn(conn, *args)

    def _read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            return fn(conn, *args)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent). On PostgreSQL under MIGRATION_LOCK, so replicas
        starting together never migrate at once. Raises SchemaTooNew, changing nothing, when a newer TeleOps has
        migrated the database already."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def newer_schema(self) -> str | None:
        """The database's revision when a newer TeleOps has migrated it since (not one of this version's), else
        None. For running replicas during a rolling upgrade (/readyz). Raises StorageUnavailable."""
        try:
            async with self.engine.connect() as conn:
                found = await conn.run_sync(_revisions)
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageUnavailable(_short(exc)) from exc
        unknown = sorted(set(found) - known_revisions())
        return unknown[0] if unknown else None

    async def ping(self) -> None:
        """Raises StorageUnavailable when the database does not answer."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageUnavailable(_short(exc)) from exc

    async def write_problem(self) -> str | None:
        """Why a write would fail now, for readiness (None: it would not): the disk holding the SQLite file has
        less than MIN_FREE_BYTES free or the file is read-only; a PostgreSQL server is a read-only standby or in
        read-only mode. Cheap: no write is made. Raises StorageUnavailable when the database does not answer."""
        if self._file is not None:
            return await asyncio.to_thread(_file_problem, self._file)
        try:
            async with self.engine.connect() as conn:
                standby = (await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar()
                read_only = (await conn.execute(text("SHOW transaction_read_only"))).scalar()
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StorageUnavailable(_short(exc)) from exc
        if standby:
            return "the PostgreSQL server is a read-only standby; point database.url at the primary"
        if read_only == "on":
            return "the PostgreSQL server is in read-only mode (default_transaction_read_only)"
        return None

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.to_thread(self._committer.close)
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._sync_engine.dispose()


def _log_not_durable(durable: asyncio.Future[None]) -> None:
    if not durable.cancelled() and (error := durable.exception()) is not None:
        log.warning("database.unsynced_write_not_durable", error=str(error))


def _all(conn: Connection, query: Executable) -> Sequence[Row[Any]]:
    return conn.execute(query).all()


def _first(conn: Connection, query: Executable) -> Row[Any] | None:
    return conn.execute(query).first()


def _scalar(conn: Connection, query: Executable) -> Any:
    return conn.execute(query).scalar()


def _short(exc: BaseException) -> str:
    """The driver's message without the SQL statement and parameters (they may carry alert data)."""
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0][:200]


def _storage_error(exc: BaseException) -> BaseException:
    """What a batch's caller sees for a driver error: IntegrityError as is, refusals as StorageUnavailable."""
    if isinstance(exc, IntegrityError):
        return exc
    if isinstance(exc, (OperationalError, DBAPIError, OSError)):
        unavailable = StorageUnavailable(_short(exc))
        unavailable.__cause__ = exc
        return unavailable
    return exc


MIN_FREE_BYTES = 16 * 1024 * 1024  # below this a commit (WAL growth, a checkpoint) may fail: not ready


def _file_problem(path: Path) -> str | None:
    try:
        stats = os.statvfs(path.parent)
    except OSError as exc:
        return f"cannot check the disk holding {path.parent}: {exc.strerror or exc}"
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        return (
            f"the disk holding {path} has {free // 1024} KiB free (less than {MIN_FREE_BYTES // 1024 // 1024} MiB): "
            "writes will fail; free disk space"
        )
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable by this process; fix its owner or mode"
    return None


def _create_private(path: Path) -> None:
    """Create a new SQLite file 0600 (its -wal and -shm files take the same mode); an existing one is left as is
    (`teleops serve` warns about a readable one)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(busy_timeout_ms: int, *, synchronous: str = "FULL", autocheckpoint: bool = True) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # FULL: a commit is on disk before we answer 2xx. NORMAL only on the pipelined batch connection,
        # whose committer fsyncs the WAL itself before anyone answers (ADR 0003).
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if not autocheckpoint:  # the group-commit connection: store/checkpointer.py checkpoints off its path
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    return on_connect


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every migration revision this version of TeleOps ships."""
    return frozenset(script.revision for script in ScriptDirectory.from_config(_alembic_config()).walk_revisions())


@functools.cache
def newest_revision() -> str:
    """The head of this version's migrations: what `migrate` brings a database to."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the migrations directory has no head"
    return head


def _revisions(connection: Connection) -> list[str]:
    """The revisions the database is stamped with (none before its first migration)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    return [str(v) for v in connection.execute(text("SELECT version_num FROM alembic_version")).scalars()]


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until this transaction ends: a replica starting meanwhile waits here, then finds nothing to do.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": MIGRATION_LOCK[0], "b": MIGRATION_LOCK[1]}
        )
    unknown = sorted(set(_revisions(connection)) - known_revisions())
    if unknown:
        raise SchemaTooNew(unknown[0], newest_revision())
    config = _alembic_config()
    config.attributes["connection"] = connection
    alembic_command.upgrade(config, "head")
