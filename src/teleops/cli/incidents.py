"""Alerts and incidents from the command line: `simulate`, `incident export`, `runbook suggest`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from teleops.cli._common import EXIT_ERROR, config_option, fail, run_async, settings_from


@click.command()
@click.argument("source")
@click.argument("fixture")
@click.option("--server", "server_url", default=None, help="Base URL (default: server.public_url or listen).")
@click.option(
    "--token",
    "token_value",
    envvar="TELEOPS_INGEST_TOKEN",
    required=True,
    help="Ingest token (or $TELEOPS_INGEST_TOKEN).",
)
@config_option
def simulate(source: str, fixture: str, server_url: str | None, token_value: str, config_path: Path | None) -> None:
    """Replay FIXTURE (a file, or a fixture name of SOURCE such as `firing`) into a running server."""
    import httpx

    from teleops.sources.registry import SOURCES, get_source

    spec = get_source(source)
    if spec is None:
        click.echo(f"teleops: unknown source {source!r}; use one of: {', '.join(s.name for s in SOURCES)}", err=True)
        sys.exit(2)
    path = Path(fixture)
    if not path.is_file():
        path = spec.folder / "fixtures" / f"{fixture.removesuffix('.json')}.json"
    if not path.is_file():
        names = sorted(p.stem for p in (spec.folder / "fixtures").glob("*.json") if ".expected" not in p.name)
        fail(f"no fixture {fixture!r}; {source} has: {', '.join(names)}")
    base = server_url or settings_from(config_path).server.base_url()
    try:
        response = httpx.post(
            f"{base.rstrip('/')}/api/v1/alerts/{source}",
            content=path.read_bytes(),
            headers={"Authorization": f"Bearer {token_value}", "Content-Type": "application/json"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {base}: {exc}. Is `teleops serve` running?")
        return
    click.echo(f"{response.status_code} {json.dumps(response.json()) if _is_json(response) else response.text}")
    if response.status_code >= 300:
        sys.exit(EXIT_ERROR)


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("content-type", "")


@click.group()
def incident() -> None:
    """Incidents (scenarios): export one for a postmortem."""


@incident.command("export")
@click.argument("incident_id", type=click.IntRange(min=1))
@click.option("--format", "fmt", type=click.Choice(["md"]), default="md", show_default=True, help="Output format.")
@config_option
def incident_export(incident_id: int, fmt: str, config_path: Path | None) -> None:
    """Print INCIDENT_ID as a postmortem-ready Markdown timeline (times, actors, commands, outputs, notes)."""
    from teleops.domain.incident import IncidentNotFound
    from teleops.memory.export import export_incident
    from teleops.store.database import Database

    settings = settings_from(config_path)

    async def run() -> str | None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            return await export_incident(database, incident_id)
        except IncidentNotFound:
            return None
        finally:
            await database.close()

    text = run_async(run)
    if text is None:
        fail(f"incident {incident_id} does not exist; list them with GET /api/v1/incidents or the web UI")
    click.echo(text, nl=False)


@click.group()
def runbook() -> None:
    """Runbooks (memory.runbooks_dir): propose one from what fixed an alert before."""


@runbook.command("suggest")
@click.argument("alertname")
@config_option
def runbook_suggest(alertname: str, config_path: Path | None) -> None:
    """Print a runbook YAML for ALERTNAME built from the fixes that stuck, for a person to review."""
    from teleops.memory.learned_runbooks import suggest_runbook
    from teleops.memory.recurrence import MemoryWindows
    from teleops.store.database import Database

    settings = settings_from(config_path)
    windows = MemoryWindows(
        fix_window=settings.memory.fix_window.timedelta,
        lookback=settings.memory.lookback.timedelta,
    )

    async def run() -> tuple[str, int]:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            text, evidence = await suggest_runbook(database, alertname, windows=windows)
            return text, len(evidence)
        finally:
            await database.close()

    text, found = run_async(run)
    if not found:
        fail(
            f"no scenario of {alertname!r} ended in a fix that stuck (a command that succeeded before a resolution "
            f"that held for {settings.memory.fix_window}); nothing to propose yet. Check the alert name's spelling"
        )
    click.echo(text, nl=False)
