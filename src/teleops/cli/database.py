"""`teleops db upgrade` and `teleops config check`."""

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
