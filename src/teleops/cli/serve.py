"""`teleops serve`: the controller."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from teleops.cli._common import config_option, db_kind, fail, require_packages, run_async, settings_from
from teleops.logs import configure_logging


@click.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the controller (HTTP API, webhooks, web console, local agent)."""
    import structlog
    import uvicorn

    from teleops.server.app import create_app
    from teleops.server.bootstrap import write_credentials
    from teleops.server.data_files import PRIVATE_UMASK, check_data_files
    from teleops.server.header_deadline import header_deadline_protocol

    # Everything the controller creates (database, keys, spool, credentials) is its user's alone.
    os.umask(PRIVATE_UMASK)
    settings = settings_from(config_path)
    require_packages(settings)
    configure_logging(settings.log_level, redaction=settings.redaction_rules())
    log = structlog.get_logger("teleops.serve")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for finding in check_data_files(settings.data_dir, settings.database.url):
        if finding.tightened:
            log.warning("data_file.tightened", path=str(finding.path), was=oct(finding.mode))
        else:
            log.warning(
                "data_file.readable", path=str(finding.path), mode=oct(finding.mode),
                hint="another user owns it; make it 0600 (chmod go= FILE) or move it away",
            )  # fmt: skip
    _migrate_first(settings.database.url, settings.database.busy_timeout_ms)
    announcements: list[str] = []

    def announce(text: str) -> None:
        # The first-start secrets go to a 0600 file; the log gets its path only (printed below).
        path = write_credentials(settings.data_dir, text)
        log.info("first_start.credentials_written", path=str(path))
        on_terminal = sys.stdout.isatty()
        announcements.append(
            text
            if on_terminal
            else f"First start: the admin login, an ingest token and an API token are in {path} (readable by "
            "this user only). Read it, keep them somewhere safe, then delete the file."
        )

    app = create_app(settings, announce=announce)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            ws_max_size=1024 * 1024,
            # Agents' frames are small and command output is capped; a deflate context per agent connection
            # doubled the controller's memory per agent (B9: 86 → 44 KiB) and cost CPU on every frame.
            ws_per_message_deflate=False,
            # The front door (server/front_door.py) bounds each request; these bound the connections.
            http=header_deadline_protocol(settings.server.header_timeout.seconds),
            limit_concurrency=settings.server.max_connections,
            timeout_keep_alive=max(1, int(settings.server.keepalive_timeout.seconds)),
        )
    )

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        # The banner (first-start credentials, the curl example) is printed once the port accepts
        # connections, so what it tells a person to run works at once.
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn offers only a flag)
            await asyncio.sleep(0.05)
        if server.started:
            click.echo(f"TeleOps listening on {settings.server.base_url()} (database: {db_kind(settings)})")
            for text in announcements:
                click.echo(text)
        await serving

    asyncio.run(run())
    if not server.started:
        fail(f"could not start on {settings.server.listen}; is another process using that port? (see the log above)")


def _migrate_first(url: str, busy_timeout_ms: int) -> None:
    """Bring the schema up to date before serving (under the migration lock on PostgreSQL, so replicas starting
    together take turns), or exit 1 saying what to do: a database a newer TeleOps migrated is refused
    (SchemaTooNew), an unreachable one too. The app's own start then finds nothing to migrate."""
    from teleops.store.database import Database

    async def run() -> None:
        database = Database(url, busy_timeout_ms=busy_timeout_ms)
        try:
            await database.migrate()
        finally:
            await database.close()

    run_async(run)
