"""`teleops db upgrade|prune` and `teleops config check`."""

from __future__ import annotations

from pathlib import Path

import click

from teleops.cli._common import config_option, db_kind, require_packages, run_async, settings_from
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
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
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
    from datetime import UTC, datetime, timedelta

    from teleops.config.settings import parse_duration
    from teleops.store.database import Database
    from teleops.store.retention import PruneResult, prune_raw_alerts

    settings = settings_from(config_path)
    keep = timedelta(seconds=parse_duration(settings.retention.raw_alerts))

    async def run() -> PruneResult:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
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
