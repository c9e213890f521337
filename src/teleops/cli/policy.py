"""`teleops policy test`: explain a policy decision."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from teleops.cli._common import EXIT_ERROR, config_option, settings_from


@click.group()
def policy() -> None:
    """Access policy: who may run what where."""


@policy.command("test", context_settings={"ignore_unknown_options": True})
@click.argument("user_name", metavar="USER")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@config_option
def policy_test(user_name: str, host: str, command: tuple[str, ...], config_path: Path | None) -> None:
    """Explain the decision for USER running COMMAND on HOST: `teleops policy test alice web-1 -- df -h`.

    One quoted COMMAND is read as typed in chat (shell syntax is refused); several words are the argv.
    Exit 0 when allowed, 1 when refused.
    """
    from teleops.commands.command_line import CommandLineError, split_command

    settings = settings_from(config_path)
    roles = {u.name: u.role for u in settings.users}
    roles.setdefault("admin", "admin")  # created by the first `teleops serve`
    words = list(command[1:] if command and command[0] == "--" else command)
    text = words[0] if len(words) == 1 else None
    try:
        argv = split_command(text) if text is not None else words
    except CommandLineError as exc:
        click.echo(f"DENIED  {user_name} on {host}: {exc}")
        click.echo("rule: cannot parse")
        sys.exit(EXIT_ERROR)
    decision = settings.access_policy().decide(
        user=user_name, role=roles.get(user_name), host=host, argv=argv, text=text
    )
    needs = [w for flag, w in ((decision.require_2fa, "2fa"), (decision.require_approval, "approval")) if flag]
    limit = f"max_timeout: {decision.max_timeout_s:g}s" if decision.max_timeout_s is not None else ""
    click.echo(f"{'ALLOWED' if decision.allowed else 'DENIED'}  {user_name} on {host}: {decision.reason}")
    click.echo(f"rule: {decision.rule}")
    if decision.allowed:
        click.echo(f"requires: {', '.join(needs) or 'nothing more'}" + (f"; {limit}" if limit else ""))
    sys.exit(0 if decision.allowed else EXIT_ERROR)
