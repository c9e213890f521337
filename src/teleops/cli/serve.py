"""`teleops serve`: the controller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from teleops.cli._common import config_option, db_kind, fail, require_packages, settings_from
from teleops.logs import configure_logging


@click.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the controller (HTTP API, webhooks, web console, local agent)."""
    import uvicorn

    from teleops.server.app import create_app

    settings = settings_from(config_path)
    require_packages(settings)
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    announcements: list[str] = []
    app = create_app(settings, announce=announcements.append)
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
