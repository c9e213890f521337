"""The `teleops` command. Exit codes: 0 ok, 1 error, 2 usage, 78 bad config. One module per command group.

Each command's module is imported only when that command runs (click's lazy-group pattern): `teleops agent`
runs on every host as root with only the agent's dependencies installed (requirements/agent.lock), so it must
not import the controller's web framework, ORM, templates or configuration.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# name -> (module, attribute), in the order `teleops --help` lists them.
_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("teleops.cli.serve", "serve"),
    "agent": ("teleops.cli.agent", "agent"),
    "agents": ("teleops.cli.agents", "agents"),
    "db": ("teleops.cli.database", "db"),
    "config": ("teleops.cli.database", "config"),
    "token": ("teleops.cli.tokens", "token"),
    "user": ("teleops.cli.users", "user"),
    "simulate": ("teleops.cli.incidents", "simulate"),
    "incident": ("teleops.cli.incidents", "incident"),
    "runbook": ("teleops.cli.incidents", "runbook"),
    "policy": ("teleops.cli.policy", "policy"),
    "audit": ("teleops.cli.audit", "audit"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attribute} is not a click command")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teleops")
def main() -> None:
    """TeleOps: alerts in your chat, commands on the alerting host, and a memory of what fixed it."""
