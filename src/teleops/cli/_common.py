"""What every `teleops` subcommand shares: the --config option, settings loading, exit codes, errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from teleops.cli.exit_codes import EXIT_CONFIG, EXIT_ERROR
from teleops.config import ConfigError, Settings, find_config_file, load_settings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "config_option",
    "db_kind",
    "fail",
    "require_packages",
    "run_async",
    "settings_from",
]

T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $TELEOPS_CONFIG, else ./teleops.yaml, else the embedded default).",
)


def settings_from(config_path: Path | None) -> Settings:
    try:
        return load_settings(find_config_file(config_path))
    except ConfigError as exc:
        click.echo(f"teleops: bad configuration:\n{exc}", err=True)
        sys.exit(EXIT_CONFIG)


def require_packages(settings: Settings) -> None:
    """Exit 78 with one line per configured feature whose Python package is missing (no traceback later)."""
    from teleops.config.packages import missing_packages

    missing = missing_packages(settings)
    for line in missing:
        click.echo(f"teleops: {line}", err=True)
    if missing:
        sys.exit(EXIT_CONFIG)


def fail(message: str) -> None:
    click.echo(f"teleops: {message}", err=True)
    sys.exit(EXIT_ERROR)


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    from teleops.store.database import SchemaTooNew, StorageUnavailable

    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except StorageUnavailable as exc:
        fail(f"database unavailable: {exc}. Check database.url and that the server is up.")
        raise AssertionError("unreachable") from exc
    except SchemaTooNew as exc:
        fail(f"refusing to run: {exc}.")
        raise AssertionError("unreachable") from exc


def db_kind(settings: Settings) -> str:
    return "SQLite" if settings.database.url.startswith("sqlite") else "PostgreSQL"
