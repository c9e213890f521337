"""`teleops agents list|bind`: the inventory of agents, and the host names each one answers for."""

from __future__ import annotations

from pathlib import Path

import click

from teleops.cli._common import config_option, fail, run_async, settings_from


@click.group()
def agents() -> None:
    """The agents and the host names each answers for (bound at first connection, changed here)."""


@agents.command("list")
@config_option
def agents_list(config_path: Path | None) -> None:
    """Each agent: name, bound hostname and host label, what it claims now, and any refused claim."""
    from teleops.store.agents import list_agents
    from teleops.store.database import Database

    settings = settings_from(config_path)

    async def run() -> None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            for agent in await list_agents(database):
                claimed = f"claims hostname={agent.hostname} host={agent.labels.get('host', '-')}"
                bound = f"bound hostname={agent.bound_hostname or '-'} host={agent.bound_host or '-'}"
                click.echo(
                    f"{agent.name}\t{bound}\t{claimed}"
                    + (f"\tCONFLICT: {agent.claim_conflict}" * bool(agent.claim_conflict))
                )
        finally:
            await database.close()

    run_async(run)


@agents.command("bind")
@click.argument("name")
@click.option("--hostname", default=None, help="The hostname NAME answers for (commands for it go to NAME).")
@click.option("--host", "host_label", default=None, help="The `host` label name NAME answers for.")
@config_option
def agents_bind(name: str, hostname: str | None, host_label: str | None, config_path: Path | None) -> None:
    """Set the host names agent NAME answers for (omit both to bind none); audited as `agent.bound`."""
    from teleops.domain.clock import system_clock
    from teleops.store.agents import bind_agent
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database

    settings = settings_from(config_path)

    async def run() -> None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            try:
                agent = await bind_agent(
                    database, name, hostname=hostname, host=host_label, by="cli", now=system_clock()
                )
            except (LookupError, ValueError) as exc:
                fail(str(exc))
                raise
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            click.echo(
                f"agent {agent.name} answers for hostname={agent.bound_hostname or '-'} host={agent.bound_host or '-'}"
            )
        finally:
            await database.close()

    run_async(run)
