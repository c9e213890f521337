"""`teleops user …`: passwords, 2FA enrolment and unlock, chat link codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from teleops.cli._common import config_option, fail, run_async, settings_from

MIN_PASSWORD_LENGTH = 10


@click.group()
def user() -> None:
    """People: web console passwords, 2FA enrolment and unlock, chat link codes."""


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
@click.option("--generate", is_flag=True, help="Generate a random password and print it alone on the last line.")
@config_option
def user_set_password(name: str, password_stdin: bool, generate: bool, config_path: Path | None) -> None:
    """Set the web console password of user NAME (prompts for it unless --password-stdin or --generate).

    Ends NAME's web console sessions (audited as `session.revoked`): they log in again with the new password."""
    import secrets

    from teleops.domain.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.users import UserStore

    if password_stdin and generate:
        click.echo("teleops: use either --password-stdin or --generate, not both", err=True)
        sys.exit(2)
    if generate:
        password = secrets.token_urlsafe(12)
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        fail(f"the password is too short ({len(password)} characters); use at least {MIN_PASSWORD_LENGTH}")
    settings = settings_from(config_path)

    async def run() -> bool:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            changed = await UserStore(database).set_password(name, password, now=system_clock(), by="cli")
            await CheckpointLog(settings.data_dir, witness=settings.audit.witness).checkpoint(database)
            return changed
        finally:
            await database.close()

    if not run_async(run):
        fail(
            f"no user {name!r}; users come from the `users:` config section, and `admin` is created "
            "by the first `teleops serve`"
        )
    click.echo(
        f"password of {name!r} set and their web sessions ended; log in at {settings.server.base_url()}/ui/login",
        err=True,
    )
    if generate:
        click.echo(password)


def _twofactor_admin(config_path: Path | None, name: str, action: str) -> str | bool:
    """Enrol or unlock NAME's TOTP, audited, with the audit head checkpointed before returning."""
    from teleops.domain.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.twofactor import TwoFactorStore
    from teleops.store.users import UserStore

    settings = settings_from(config_path)

    async def run() -> str | bool:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            configured = {u.name for u in settings.users}
            if name not in configured and await UserStore(database).get(name) is None:
                fail(f"no user {name!r}; users come from the `users:` config section (and `admin`)")
            store = TwoFactorStore(database, settings.data_dir)
            now = system_clock()
            result: str | bool = (
                await store.enroll(name, now=now, by="cli")
                if action == "enroll"
                else await store.unlock(name, now=now, by="cli")
            )
            await CheckpointLog(settings.data_dir).checkpoint(database)
            return result
        finally:
            await database.close()

    return run_async(run)


@user.command("2fa-enroll")
@click.argument("name")
@config_option
def user_2fa_enroll(name: str, config_path: Path | None) -> None:
    """Give NAME a new TOTP secret (replacing any old one); prints the otpauth:// URI alone on the last line."""
    uri = _twofactor_admin(config_path, name, "enroll")
    click.echo(f"enrolled {name!r}: add this to their authenticator app (it is shown only now)", err=True)
    click.echo(str(uri))


@user.command("2fa-unlock")
@click.argument("name")
@config_option
def user_2fa_unlock(name: str, config_path: Path | None) -> None:
    """Clear NAME's 2FA lock and failure count after too many wrong codes."""
    if not _twofactor_admin(config_path, name, "unlock"):
        fail(f"{name!r} has no authenticator enrolled; enrol with `teleops user 2fa-enroll {name}`")
    click.echo(f"2FA of {name!r} unlocked")


@user.command("invite")
@click.argument("name")
@config_option
def user_invite(name: str, config_path: Path | None) -> None:
    """A one-time code (valid 24 h) that NAME sends to the bot as `/link CODE`; printed alone on the last line."""
    from teleops.domain.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.identities import LINK_CODE_TTL, IdentityStore
    from teleops.store.users import UserStore

    settings = settings_from(config_path)

    async def run() -> str | None:
        database = Database.from_settings(settings.database)
        try:
            await database.migrate()
            if await UserStore(database).get(name) is None:
                return None
            code = await IdentityStore(database).invite(name, now=system_clock(), by="cli")
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            return code
        finally:
            await database.close()

    code = run_async(run)
    if code is None:
        fail(f"no user {name!r}; declare it under `users:` in the config (serve creates it) and try again")
        return
    hours = int(LINK_CODE_TTL.total_seconds() // 3600)
    click.echo(f"link code for {name!r}, valid {hours} h, usable once: they send `/link CODE` to the bot", err=True)
    click.echo(code)
