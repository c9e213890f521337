"""`teleops agent`: the agent program on a server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from teleops.cli.exit_codes import EXIT_CONFIG
from teleops.logs import configure_logging


@click.command()
@click.option("--server", required=True, help="The controller's base URL, e.g. https://teleops.example.org.")
@click.option("--name", required=True, help="This agent's name; must match its token's name.")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the agent token (`teleops token create agent NAME`); keep it mode 0600.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="This host's allowlist (YAML: allow/deny patterns). Without it every command is refused.",
)
@click.option("--allow-all", is_flag=True, help="Allow every command (only for the embedded local agent).")
@click.option(
    "--run-as",
    default=None,
    metavar="USER",
    help="With --allow-all: who commands run as when the agent is root (default nobody). With --policy, say "
    "run_as: in the policy file instead.",
)
@click.option(
    "--redact-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    hidden=True,  # written by `teleops serve` for its embedded agent: the controller's configured secrets
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Trust only this CA for wss:// (pin the controller's CA); default: the system store.",
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="sha256//BASE64",
    help="Accept only a controller whose public key has this SHA-256 (curl --pinnedpubkey form; sha256:HEX too). "
    "Repeatable for key rotation. Alone it replaces CA checks (self-signed is fine); with --ca-file both apply.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where finished results wait for the controller (default: $STATE_DIRECTORY or ~/.local/state).",
)
@click.option(
    "--label", "labels", multiple=True, help="KEY=VALUE shown on the controller (repeatable); host=X adds a name."
)
@click.option("--max-concurrent", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@click.option("--exit-with-parent", type=int, default=None, hidden=True)
def agent(
    server: str,
    name: str,
    token_file: Path,
    policy_file: Path | None,
    allow_all: bool,
    run_as: str | None,
    redact_file: Path | None,
    ca_file: Path | None,
    pins: tuple[str, ...],
    state_dir: Path | None,
    labels: tuple[str, ...],
    max_concurrent: int,
    log_level: str,
    exit_with_parent: int | None,
) -> None:
    """Run the agent on this host: dial the controller and run the commands its allowlist permits."""
    from teleops.agent.main import AgentSettings, AgentSetupError, run_agent

    configure_logging(log_level)
    pairs: list[tuple[str, str]] = []
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep or not key:
            click.echo(f"teleops: --label {label!r} must be KEY=VALUE", err=True)
            sys.exit(2)
        pairs.append((key, value))
    settings = AgentSettings(
        server=server,
        name=name,
        token_file=token_file,
        policy_file=policy_file,
        allow_all=allow_all,
        run_as=run_as,
        redact_file=redact_file,
        ca_file=ca_file,
        pins=pins,
        state_dir=state_dir,
        labels=tuple(pairs),
        max_concurrent=max_concurrent,
        exit_with_parent=exit_with_parent,
    )
    try:
        asyncio.run(run_agent(settings))
    except AgentSetupError as exc:
        click.echo(f"teleops agent: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
