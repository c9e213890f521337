"""`teleops db upgrade|prune|copy|backup|restore` and `teleops config check`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from teleops.cli._common import config_option, db_kind, fail, require_packages, run_async, settings_from

if TYPE_CHECKING:
    from teleops.store.copy import TableProgress
from teleops.config import find_config_file


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path | None) -> None:
    """Apply all migrations (serve does this too)."""
    from teleops.store.database import Database

    settings = settings_from(config_path)

    async def run() -> None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
        finally:
            await database.close()

    run_async(run)
    click.echo("database schema is up to date")


@db.command("prune")
@config_option
def db_prune(config_path: Path | None) -> None:
    """Delete raw alert reports past retention.raw_alerts now (serve does it every retention.every)."""
    from datetime import UTC, datetime

    from teleops.store.database import Database
    from teleops.store.retention import PruneResult, prune_raw_alerts

    settings = settings_from(config_path)
    keep = settings.retention.raw_alerts.timedelta

    async def run() -> PruneResult:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            now = datetime.now(UTC)
            return await prune_raw_alerts(database, cutoff=now - keep, now=now)
        finally:
            await database.close()

    result = run_async(run)
    click.echo(
        f"deleted {result.alerts_deleted} raw alert reports received before {result.cutoff:%Y-%m-%d %H:%M} UTC "
        "(of incidents resolved before then; each keeps its first and last report)"
    )


@db.command("copy")
@click.option("--from", "source", required=True, metavar="URL", help="The SQLite database: sqlite+aiosqlite:///path.")
@click.option("--to", "target", required=True, metavar="URL", help="The PostgreSQL database: postgresql+asyncpg://…")
@click.option("--restart", is_flag=True, help="The target holds an interrupted copy: empty it and copy again.")
@click.option("--overwrite", is_flag=True, help="The target holds TeleOps data: delete it and copy.")
@click.option("--batch-rows", type=click.IntRange(min=1, max=100_000), default=2000, show_default=True)
def db_copy(source: str, target: str, restart: bool, overwrite: bool, batch_rows: int) -> None:
    """Copy the whole history from SQLite into PostgreSQL (stop the controller first; docs/backup-restore.md).

    The target is migrated, then filled in one transaction: an interrupted copy leaves no partial data, only a
    marker that makes the next run refuse until --restart."""
    from teleops.store.copy import CopyRefused, copy_database

    reporter = _ProgressReporter()
    try:
        summary = run_async(
            lambda: copy_database(
                source, target, restart=restart, overwrite=overwrite, batch_rows=batch_rows, progress=reporter
            )
        )
    except CopyRefused as exc:
        _fail(f"db copy: {exc}")
    total = sum(summary.rows.values())
    click.echo(
        f"copied {total} rows in {len(summary.rows)} tables in {summary.seconds:.1f}s; sequences continue past the "
        "copied ids. Next: copy the data files (docs/backup-restore.md), point database.url at the target, "
        "run `teleops audit verify`"
    )


def _fail(message: str) -> NoReturn:
    fail(message)
    raise AssertionError("unreachable: fail() exits")


class _ProgressReporter:
    """Prints one line per finished table and, for a long table, a line every two seconds (stderr)."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, progress: TableProgress) -> None:
        now = time.monotonic()
        if not progress.done and now - self._last < 2.0:
            return
        self._last = now
        state = "done" if progress.done else "copying"
        click.echo(
            f"{progress.table}: {progress.copied}/{progress.total} rows {state} "
            f"({progress.rows_per_second:.0f} rows/s)",
            err=True,
        )


@db.command("backup")
@click.option(
    "--output",
    "output",
    required=True,
    metavar="FILE|-",
    help="Where the archive (.tar.gz) goes; '-' for stdout. An existing file is never overwritten.",
)
@config_option
def db_backup(output: str, config_path: Path | None) -> None:
    """Back up the SQLite database and its data files while the controller serves (PostgreSQL: use pg_dump)."""
    from teleops.server.data_files import sqlite_files
    from teleops.store.backup import BackupError, write_backup

    settings = settings_from(config_path)
    files = sqlite_files(settings.database.url)
    if not files:
        _fail(
            "db backup: database.url is not a SQLite file; back up PostgreSQL with pg_dump --format=custom and the "
            f"data directory's key files as docs/backup-restore.md shows (data_dir: {settings.data_dir})"
        )
    try:
        if output == "-":
            summary = write_backup(files[0], settings.data_dir, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            path = Path(output)
            try:
                out = path.open("xb")
            except FileExistsError:
                _fail(f"db backup: {path} already exists; choose a new file name (backups are never overwritten)")
            with out:
                path.chmod(0o600)
                summary = write_backup(files[0], settings.data_dir, out)
    except BackupError as exc:
        if output != "-":
            Path(output).unlink(missing_ok=True)
        _fail(f"db backup: {exc}")
    click.echo(
        f"backup of {files[0]} taken at {summary.taken_at}: {summary.database_bytes} bytes, {summary.incidents} "
        f"incidents, audit head seq {summary.audit_head_seq}, data files: {', '.join(summary.data_files) or 'none'}"
        f"{'' if output == '-' else f' -> {output}'}",
        err=output == "-",
    )


@db.command("restore")
@click.option("--from", "source", required=True, metavar="FILE|-", help="An archive from `teleops db backup`.")
@config_option
def db_restore(source: str, config_path: Path | None) -> None:
    """Restore a backup into the configured (empty) data directory and SQLite path; never overwrites."""
    from teleops.server.data_files import sqlite_files
    from teleops.store.backup import BackupError, restore_backup

    settings = settings_from(config_path)
    files = sqlite_files(settings.database.url)
    if not files:
        _fail(
            "db restore: database.url is not a SQLite file; restore PostgreSQL with pg_restore (docs/backup-restore.md)"
        )
    try:
        if source == "-":
            manifest = restore_backup(sys.stdin.buffer, database=files[0], data_dir=settings.data_dir)
        else:
            if not Path(source).is_file():
                _fail(f"db restore: no backup file at {source}; check the path")
            with Path(source).open("rb") as archive:
                manifest = restore_backup(archive, database=files[0], data_dir=settings.data_dir)
    except BackupError as exc:
        _fail(f"db restore: {exc}")
    click.echo(
        f"restored the backup taken at {manifest.get('taken_at')} ({manifest.get('incidents')} incidents, audit head "
        f"seq {manifest.get('audit_head_seq')}) into {files[0]} and {settings.data_dir}. "
        "Next: start `teleops serve`, then run `teleops audit verify`"
    )


@click.group()
def config() -> None:
    """Configuration."""


@config.command("check")
@config_option
def config_check(config_path: Path | None) -> None:
    """Validate the configuration and print where it came from."""
    path = find_config_file(config_path)
    settings = settings_from(config_path)
    require_packages(settings)
    click.echo(
        f"configuration OK ({path or 'embedded default'}); database: {db_kind(settings)}, "
        f"listen: {settings.server.listen}, users: {len(settings.users)}"
    )
