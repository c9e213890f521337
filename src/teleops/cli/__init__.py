"""The `teleops` command. Exit codes: 0 ok, 1 error, 2 usage, 78 bad config. One module per command group."""

from __future__ import annotations

import click

from teleops.cli.agent import agent
from teleops.cli.audit import audit
from teleops.cli.database import config, db
from teleops.cli.incidents import incident, runbook, simulate
from teleops.cli.policy import policy
from teleops.cli.serve import serve
from teleops.cli.tokens import token
from teleops.cli.users import user

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teleops")
def main() -> None:
    """TeleOps: alerts in your chat, commands on the alerting host, and a memory of what fixed it."""


main.add_command(serve)
main.add_command(agent)
main.add_command(db)
main.add_command(config)
main.add_command(token)
main.add_command(user)
main.add_command(simulate)
main.add_command(incident)
main.add_command(runbook)
main.add_command(policy)
main.add_command(audit)
