"""`teleops token create|revoke`: ingest, agent and API tokens."""

from __future__ import annotations

from pathlib import Path

import click

from teleops.cli._common import config_option, fail, run_async, settings_from


@click.group()
def token() -> None:
    """API, ingest and agent tokens."""


@token.group("create")
def token_create() -> None:
    """Create a token; the secret is printed alone on the last line, once."""


def _create_token(config_path: Path | None, kind: str, name: str, user: str | None) -> None:
    from teleops.domain.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.tokens import TokenExists, TokenKind, TokenStore
    from teleops.store.users import UserStore

    settings = settings_from(config_path)

    async def run() -> str:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            if user is not None and await UserStore(database).get(user) is None:
                fail(f"no user {user!r}; users come from the `users:` config section (and `admin`)")
            secret = await TokenStore(database).create(
                TokenKind(kind), name, now=system_clock(), user_name=user, by="cli"
            )
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            return secret
        except TokenExists as exc:
            fail(str(exc))
            raise
        finally:
            await database.close()

    secret = run_async(run)
    click.echo(f"created {kind} token {name!r}" + (f" for user {user!r}" if user else ""), err=True)
    click.echo(secret)


@token_create.command("ingest")
@click.argument("name")
@config_option
def token_create_ingest(name: str, config_path: Path | None) -> None:
    """A token for a monitoring sender (Authorization: Bearer TOKEN)."""
    _create_token(config_path, "ingest", name, None)


@token_create.command("agent")
@click.argument("name")
@config_option
def token_create_agent(name: str, config_path: Path | None) -> None:
    """A token for the agent called NAME."""
    _create_token(config_path, "agent", name, None)


@token_create.command("api")
@click.argument("name")
@click.option("--user", required=True, help="The user this token acts as (under that user's policy).")
@config_option
def token_create_api(name: str, user: str, config_path: Path | None) -> None:
    """A token for scripts and the REST API, acting as USER."""
    _create_token(config_path, "api", name, user)


@token.command("revoke")
@click.argument("kind", type=click.Choice(["ingest", "agent", "api"]))
@click.argument("name")
@config_option
def token_revoke(kind: str, name: str, config_path: Path | None) -> None:
    """Revoke a token by kind and name."""
    from teleops.domain.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.tokens import TokenKind, TokenStore

    settings = settings_from(config_path)

    async def run() -> bool:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            revoked = await TokenStore(database).revoke(TokenKind(kind), name, now=system_clock(), by="cli")
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            return revoked
        finally:
            await database.close()

    if not run_async(run):
        fail(f"no live {kind} token named {name!r}")
    click.echo(f"revoked {kind} token {name!r}")
