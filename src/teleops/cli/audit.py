"""`teleops audit verify|export`: the tamper-evident audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from teleops.cli._common import EXIT_ERROR, config_option, run_async, settings_from
from teleops.config import Settings


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _audit_parts(settings: Settings) -> tuple[Any, Any]:
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database

    database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    return database, CheckpointLog(settings.data_dir)


@audit.command("verify")
@config_option
def audit_verify(config_path: Path | None) -> None:
    """Check the hash chain and the checkpoints outside the database. Exit 0 when intact, 1 with the first bad
    record when it was edited, deleted, reordered, truncated or re-chained."""
    from teleops.store.audit_verify import Finding, verify_audit

    settings = settings_from(config_path)

    async def run() -> Finding:
        database, checkpoints = _audit_parts(settings)
        try:
            await database.migrate()
            return await verify_audit(database, checkpoints)
        finally:
            await database.close()

    finding = run_async(run)
    if finding.ok:
        click.echo(
            f"audit log intact: {finding.events} events, head seq {finding.head_seq}, "
            f"{finding.checkpoints} checkpoints checked"
        )
        return
    where = f" at record {finding.seq}" if finding.seq is not None else ""
    click.echo(f"audit log TAMPERED ({finding.kind}){where}: {finding.message}")
    click.echo("Keep this database and data dir as evidence; restore from a backup taken before that record.", err=True)
    sys.exit(EXIT_ERROR)


@audit.command("export")
@click.option("--since", "since", type=click.IntRange(min=0), default=0, help="First seq to export (default: all).")
@config_option
def audit_export(since: int, config_path: Path | None) -> None:
    """Write the audit events as JSON lines (oldest first) to stdout."""
    from teleops.store.audit import iter_events

    settings = settings_from(config_path)

    async def run() -> list[str]:
        database, _ = _audit_parts(settings)
        try:
            await database.migrate()
            lines: list[str] = await database.run_in_transaction(
                lambda conn: [json.dumps(e.to_json(), ensure_ascii=False) for e in iter_events(conn, since=since)]
            )
            return lines
        finally:
            await database.close()

    for line in run_async(run):
        click.echo(line)
