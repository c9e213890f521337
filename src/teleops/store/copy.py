"""`teleops db copy`: carry a SQLite database's whole history into PostgreSQL.

Generic by construction: every table of the schema metadata is copied, parents before children
(`metadata.sorted_tables`), rows in primary-key order, in batches, with the column types of the metadata doing the
conversions (SQLite's text timestamps become timestamps, JSON stays the very JSON text it was). A table in the
source that the metadata does not know stops the copy before anything is written, so a new table can never be
left behind silently.

Safety, in the order things happen:
1. The target is checked: a marker table (`teleops_copy_marker`) left by an interrupted copy, or rows in any of
   our tables, refuse the copy unless `restart` (interrupted) or `overwrite` (has data) says to empty it first.
2. The target is migrated to the newest schema, then the marker is committed.
3. One transaction: empty our tables, copy every table from one consistent snapshot of the source, copy the
   search index, set each sequence past the largest copied id, compare row counts, drop the marker, commit.
A copy killed at any point therefore leaves either nothing of the data (and the marker, which says so) or the
complete copy; running it again with `restart` is always safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

# Tables defined outside schema.py register themselves on the shared metadata when imported.
# tests/integration/test_db_copy.py::test_the_copy_knows_every_table_the_migrations_create keeps this list whole.
from teleops.store import approvals as _approvals  # noqa: F401
from teleops.store import audit as _audit  # noqa: F401
from teleops.store import calendar_feeds as _calendar_feeds  # noqa: F401
from teleops.store import duo_pushes as _duo_pushes  # noqa: F401
from teleops.store import leases as _leases  # noqa: F401  (the Telegram offset travels; a lease expires by itself)
from teleops.store import oncall_overrides as _oncall_overrides  # noqa: F401
from teleops.store import signin_guard as _signin_guard  # noqa: F401
from teleops.store import twofactor as _twofactor  # noqa: F401
from teleops.store.database import Database
from teleops.store.schema import metadata

__all__ = ["CopyRefused", "CopySummary", "TableProgress", "copy_database", "source_tables_unknown"]

MARKER_TABLE = "teleops_copy_marker"
SEARCH_TABLE = "scenario_search"  # kept by triggers (migration 0006); copied from the source's own index
# What SQLite holds besides our tables: Alembic's bookkeeping, its own catalog, and the FTS5 index's shadow tables.
_NOT_DATA = ("alembic_version", "sqlite_", f"{SEARCH_TABLE}_")
_MIGRATIONS = Path(__file__).parent / "migrations"


class CopyRefused(Exception):
    """The copy did not start (or was rolled back): the message says why and what to run instead."""


@dataclass(frozen=True, slots=True)
class TableProgress:
    """How far the copy of one table is; `done` once all its rows are in the (uncommitted) target."""

    table: str
    copied: int
    total: int
    seconds: float
    done: bool

    @property
    def rows_per_second(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else float(self.copied)


@dataclass(frozen=True, slots=True)
class CopySummary:
    rows: dict[str, int]  # table → rows copied (equal to the source's count, checked before commit)
    seconds: float


class _JSONText(TypeDecorator[str]):
    """A JSON column moved as its text: read verbatim from SQLite, written with a cast so PostgreSQL stores the
    same document (SQL NULL stays NULL, JSON `null` stays `null`, key order and spacing are kept)."""

    impl = Text
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> ColumnElement[Any]:
        return cast(bindvalue, JSON)


def _copy_tables() -> list[Table]:
    """The metadata's tables in foreign-key order, each a private copy whose JSON columns move as text."""
    private = MetaData()
    tables = []
    for table in metadata.sorted_tables:
        copy = table.to_metadata(private)
        for column in copy.columns:
            if isinstance(column.type, JSON):
                column.type = _JSONText()
        tables.append(copy)
    return tables


# The PostgreSQL search table (migration 0006); `tsv` is generated from `body`.
_search = Table(
    SEARCH_TABLE,
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("incident_id", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", Text, nullable=False),
)


# The same index in SQLite: an FTS5 table whose rowid is the id.
_fts = Table(
    SEARCH_TABLE,
    MetaData(),
    Column("rowid", BigInteger, primary_key=True),
    Column("incident_id", BigInteger),
    Column("kind", String(16)),
    Column("body", Text),
)

# Committed before the data and dropped in the data's own transaction: while it exists, the data is incomplete.
_marker = Table(MARKER_TABLE, MetaData(), Column("source", Text), Column("started_at", Text))


def source_tables_unknown(conn: Connection) -> list[str]:
    """Tables in the SQLite source that the copy would not carry (empty when it carries them all)."""
    known = {table.name for table in metadata.sorted_tables} | {SEARCH_TABLE}
    names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
    return sorted(n for n in names if n not in known and not n.startswith(_NOT_DATA))


def _head_revision() -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _source_path(source_url: str) -> Path:
    url = make_url(source_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise CopyRefused(
            f"--from must be a SQLite database file (sqlite+aiosqlite:///path/to/teleops.db), not {_safe(source_url)}"
        )
    path = Path(url.database)
    if not path.is_file():
        raise CopyRefused(f"no SQLite database at {path}; check --from (the controller's database.url)")
    return path


def _check_target_url(target_url: str) -> None:
    url = make_url(target_url)
    if url.get_backend_name() != "postgresql":
        raise CopyRefused(
            f"--to must be a PostgreSQL database (postgresql+asyncpg://user:password@host/dbname), "
            f"not {_safe(target_url)}"
        )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _open_source(path: Path) -> Connection:
    """A connection holding one read snapshot of the source for as long as it is open (WAL readers see the
    database as of their first read, while a controller that still runs goes on writing)."""
    engine = create_engine(f"sqlite+pysqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, so the snapshot starts at once

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    conn = engine.connect()
    conn.begin()
    return conn


def _source_state(source: Connection, path: Path) -> dict[str, int]:
    """Row counts of every table, after checking the source is a TeleOps database at the newest schema."""
    try:
        revision = source.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as exc:
        raise CopyRefused(f"{path} is not a TeleOps database (no alembic_version table); check --from") from exc
    head = _head_revision()
    if revision != head:
        raise CopyRefused(
            f"{path} is at schema revision {revision}, this teleops at {head}: bring it up to date first with "
            f"TELEOPS_DATABASE__URL=sqlite+aiosqlite:///{path} teleops db upgrade (with the controller stopped)"
        )
    unknown = source_tables_unknown(source)
    if unknown:
        raise CopyRefused(
            f"{path} holds tables this teleops does not know ({', '.join(unknown)}); copy with the teleops "
            "version that created them"
        )
    counts = {t.name: source.execute(select(func.count()).select_from(t)).scalar_one() for t in _copy_tables()}
    counts[SEARCH_TABLE] = source.execute(select(func.count()).select_from(_fts)).scalar_one()
    return counts


async def _target_state(conn: AsyncConnection) -> tuple[str | None, int]:
    """(the interrupted copy's marker text or None, rows in our tables) of the target."""

    def read(sync: Connection) -> tuple[str | None, int]:
        names = set(inspect(sync).get_table_names())
        marker = None
        if MARKER_TABLE in names:
            row = sync.execute(select(_marker)).first()
            marker = f"from {row[0]}, started {row[1]}" if row else "no details"
        rows = 0
        for table in metadata.sorted_tables:
            if table.name in names and table.name != "audit_head":  # the migrations seed audit_head
                rows += sync.execute(select(func.count()).select_from(table)).scalar_one()
        return marker, rows

    return await conn.run_sync(read)


def _batches(source: Connection, table: Table, batch_rows: int) -> Iterator[Sequence[dict[str, Any]]]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = source.execute(select(table).order_by(*order))
    while rows := result.fetchmany(batch_rows):
        yield [dict(row._mapping) for row in rows]


def _search_batches(source: Connection, batch_rows: int) -> Iterator[Sequence[dict[str, Any]]]:
    incident_id = cast(_fts.c.incident_id, Integer)
    result = source.execute(select(_fts.c.rowid, incident_id, _fts.c.kind, _fts.c.body).order_by(_fts.c.rowid))
    while rows := result.fetchmany(batch_rows):
        yield [{"id": r[0], "incident_id": r[1], "kind": r[2], "body": r[3]} for r in rows]


async def copy_database(
    source_url: str,
    target_url: str,
    *,
    restart: bool = False,
    overwrite: bool = False,
    batch_rows: int = 2000,
    progress: Callable[[TableProgress], None] = lambda _p: None,
) -> CopySummary:
    """Copy every row of the SQLite database at `source_url` into the PostgreSQL database at `target_url`.

    Raises CopyRefused, with nothing written to the target's data, when: the URLs are not SQLite → PostgreSQL;
    the source is not a TeleOps database at this version's schema or holds unknown tables; the target holds an
    interrupted copy (pass `restart`) or rows (pass `overwrite`); the target cannot be reached; a row is refused
    by PostgreSQL (the message names the table). `progress` is called after every batch.
    """
    _check_target_url(target_url)
    path = _source_path(source_url)
    started = time.monotonic()
    source = _open_source(path)
    engine = create_async_engine(target_url)
    try:
        counts = _source_state(source, path)
        try:
            async with engine.connect() as conn:
                marker, rows = await _target_state(conn)
                await conn.rollback()
        except (OSError, DBAPIError) as exc:
            raise CopyRefused(
                f"cannot reach the target {_safe(target_url)}: {_first_line(exc)}; check --to and that the database "
                "exists (createdb) and accepts this user"
            ) from exc
        if marker is not None and not restart:
            raise CopyRefused(
                f"the target holds an interrupted copy ({marker}); its data is incomplete. Run the same command "
                "again with --restart to empty the target and copy everything again"
            )
        if marker is None and rows and not overwrite:
            raise CopyRefused(
                f"the target already holds {rows} rows of TeleOps data; copying would mix two histories. Point --to "
                "at an empty database, or pass --overwrite to delete the target's data first"
            )
        target = Database(target_url)
        try:
            await target.migrate()
        finally:
            await target.close()
        async with engine.begin() as conn:
            await conn.run_sync(_marker.metadata.create_all)
            await conn.execute(delete(_marker))
            await conn.execute(
                insert(_marker).values(source=str(path), started_at=datetime.now(UTC).isoformat(timespec="seconds"))
            )
        copied = await _copy_all(engine, source, counts, batch_rows, progress)
    finally:
        source.close()
        await engine.dispose()
    return CopySummary(copied, time.monotonic() - started)


async def _copy_all(
    engine: Any,
    source: Connection,
    counts: dict[str, int],
    batch_rows: int,
    progress: Callable[[TableProgress], None],
) -> dict[str, int]:
    tables = _copy_tables()
    copied: dict[str, int] = {}
    async with engine.begin() as conn:
        names = ", ".join([SEARCH_TABLE, *(t.name for t in tables)])
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        for table in tables:
            copied[table.name] = await _copy_rows(
                conn, table, _batches(source, table, batch_rows), counts[table.name], progress
            )
        # Triggers indexed the incidents and notes just inserted; the source's own index also holds commands.
        await conn.execute(delete(_search))
        copied[SEARCH_TABLE] = await _copy_rows(
            conn, _search, _search_batches(source, batch_rows), counts[SEARCH_TABLE], progress
        )
        for table in [*tables, _search]:
            column = table.autoincrement_column
            if column is not None:  # the next id PostgreSQL hands out comes after the copied ones
                sequence = func.pg_get_serial_sequence(table.name, column.name)
                await conn.execute(select(func.setval(sequence, func.coalesce(func.max(column), 0) + 1, False)))
        for table in [*tables, _search]:
            landed = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            if landed != counts[table.name]:
                raise CopyRefused(
                    f"{table.name}: {landed} rows in the target but {counts[table.name]} in the source; nothing was "
                    "committed. Run the copy again with --restart"
                )
        await conn.run_sync(_marker.drop)
    return copied


async def _copy_rows(
    conn: AsyncConnection,
    table: Table,
    batches: Iterator[Sequence[dict[str, Any]]],
    total: int,
    progress: Callable[[TableProgress], None],
) -> int:
    started = time.monotonic()
    copied = 0
    for batch in batches:
        try:
            await conn.execute(insert(table), list(batch))
        except DBAPIError as exc:
            raise CopyRefused(
                f"PostgreSQL refused a row of {table.name} (ids {_ids(batch)}): {_first_line(exc)}; nothing was "
                "committed. Fix that row in the source (or report it as a bug) and run the copy again with --restart"
            ) from exc
        copied += len(batch)
        progress(TableProgress(table.name, copied, total, time.monotonic() - started, done=False))
    progress(TableProgress(table.name, copied, total, time.monotonic() - started, done=True))
    return copied


def _ids(batch: Sequence[dict[str, Any]]) -> str:
    key = "id" if "id" in batch[0] else next(iter(batch[0]))
    return f"{batch[0][key]}…{batch[-1][key]}"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0][:300]
