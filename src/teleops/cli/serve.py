"""`teleops serve`: the controller."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from teleops.cli._common import config_option, db_kind, fail, require_packages, run_async, settings_from
from teleops.config import Settings
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
    _prepare_database(settings)
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


def _prepare_database(settings: Settings) -> None:
    """Bring the schema up to date before serving (under the migration lock on PostgreSQL, so replicas starting
    together take turns), and on PostgreSQL make sure this replica holds the same key files as the others; or exit
    1 saying what to do: a database a newer TeleOps migrated is refused (SchemaTooNew), an unreachable one, and a
    missing or different key file (KeyFileDisagrees). The app's own start then finds nothing to migrate."""
    from teleops.store.database import Database
    from teleops.store.sealed_argv import KEY_FILE as ARGV_KEY_FILE
    from teleops.store.sealed_argv import ArgvVault
    from teleops.store.server_keys import KeyFileDisagrees, agree_on_key_file
    from teleops.store.twofactor import TwoFactorStore

    async def run() -> None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            if database.is_sqlite:
                return  # one process: nothing to agree with
            now = datetime.now(UTC)
            twofactor = TwoFactorStore(database, settings.data_dir)

            def make_argv_key() -> None:
                ArgvVault.open(settings.data_dir, settings.redaction_rules())

            shared: list[tuple[Path, Callable[[], None]]] = [
                (settings.data_dir / ARGV_KEY_FILE, make_argv_key),
                (twofactor.key_path, twofactor.ensure_key),
            ]
            for path, create in shared:
                if not await agree_on_key_file(database, path, now=now):
                    create()  # the first replica: make it now, so the others are started with a copy
                    await agree_on_key_file(database, path, now=now)
        except KeyFileDisagrees as exc:
            fail(f"refusing to start: {exc}.")
        finally:
            await database.close()

    run_async(run)
