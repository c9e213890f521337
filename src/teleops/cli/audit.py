"""`teleops audit verify|export`: the tamper-evident audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from teleops.cli._common import EXIT_ERROR, config_option, run_async, settings_from
from teleops.cli.exit_codes import EXIT_CONFIG
from teleops.config import Settings


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _audit_parts(settings: Settings) -> tuple[Any, Any]:
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database

    database = Database.from_settings(settings.database)
    return database, CheckpointLog(settings.data_dir, witness=settings.audit.witness)


@audit.command("verify")
@config_option
def audit_verify(config_path: Path | None) -> None:
    """Check the hash chain and the checkpoints outside the database. Exit 0 when intact, 1 with the first bad
    record when it was edited, deleted, reordered, truncated or re-chained."""
    from teleops.store.audit_verify import Finding, verify_audit

    settings = settings_from(config_path)

    async def run() -> Finding:
        database, checkpoints = _audit_parts(settings)
        try:
            await database.migrate()
            return await verify_audit(database, checkpoints)
        finally:
            await database.close()

    finding = run_async(run)
    if finding.ok:
        witnessed = (
            f", {finding.witnessed} witnessed heads checked (newest seq {finding.witnessed_seq})"
            if settings.audit.witness is not None
            else ""
        )
        click.echo(
            f"audit log intact: {finding.events} events, head seq {finding.head_seq}, "
            f"{finding.checkpoints} checkpoints checked{witnessed}"
        )
        if settings.audit.witness is None:
            click.echo(
                "note: no audit witness is configured (audit.witness), so the only anchor is the checkpoint file "
                "in the data directory, which TeleOps' own OS user can rewrite; see docs/adr/0004-audit-witness.md",
                err=True,
            )
        elif finding.witnessed_seq < finding.head_seq:
            click.echo(
                f"note: records {finding.witnessed_seq + 1}-{finding.head_seq} are newer than the newest witnessed "
                "head; they are anchored only in the data directory until the next checkpoint reaches the witness",
                err=True,
            )
        return
    where = f" at record {finding.seq}" if finding.seq is not None else ""
    click.echo(f"audit log TAMPERED ({finding.kind}){where}: {finding.message}")
    click.echo("Keep this database and data dir as evidence; restore from a backup taken before that record.", err=True)
    sys.exit(EXIT_ERROR)


@audit.command("export")
@click.option("--since", "since", type=click.IntRange(min=0), default=0, help="First seq to export (default: all).")
@config_option
def audit_export(since: int, config_path: Path | None) -> None:
    """Write the audit events as JSON lines (oldest first) to stdout."""
    from teleops.store.audit import iter_events

    settings = settings_from(config_path)

    async def run() -> list[str]:
        database, _ = _audit_parts(settings)
        try:
            await database.migrate()
            lines: list[str] = await database.run_in_transaction(
                lambda conn: [json.dumps(e.to_json(), ensure_ascii=False) for e in iter_events(conn, since=since)]
            )
            return lines
        finally:
            await database.close()

    for line in run_async(run):
        click.echo(line)


@audit.command("witness")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unix socket to listen on, e.g. /run/teleops-witness/witness.sock (the controller's audit.witness).",
)
@click.option(
    "--log",
    "log_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where witnessed heads are appended, e.g. /var/lib/teleops-witness/witness.log.",
)
@click.option(
    "--allow-user",
    "allowed_users",
    multiple=True,
    metavar="USER",
    help="Only this user may send heads (the controller's; repeatable). Default: anyone who can open the socket.",
)
@click.option(
    "--user",
    "run_as",
    default=None,
    metavar="USER",
    help="Started as root: become this user before opening anything (else run it as that user, e.g. systemd User=).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def audit_witness(
    socket_path: Path, log_path: Path, allowed_users: tuple[str, ...], run_as: str | None, log_level: str
) -> None:
    """Keep the audit chain's heads where TeleOps' own user cannot rewrite them. Run it as a user of its own."""
    import asyncio
    import contextlib
    import os
    import pwd
    import signal

    from teleops.logs import configure_logging
    from teleops.witness.protocol import WitnessError
    from teleops.witness.server import WitnessSetupError, preload, run_witness

    configure_logging(log_level)

    def user(name: str, option: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            click.echo(f"teleops audit witness: {option} {name!r}: no such user on this machine", err=True)
            sys.exit(EXIT_CONFIG)

    uids = [user(name, "--allow-user").pw_uid for name in allowed_users]
    if run_as is not None:
        entry = user(run_as, "--user")
        if os.geteuid() != 0:
            click.echo(f"teleops audit witness: --user {run_as} needs to be started as root", err=True)
            sys.exit(EXIT_CONFIG)
        # Everything the witness runs is loaded by now; from here on it is that user, before any file is opened.
        preload()
        os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)

    async def serve() -> None:
        task = asyncio.create_task(run_witness(socket_path, log_path, allowed_uids=uids))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(serve())
    except (WitnessSetupError, WitnessError) as exc:
        click.echo(f"teleops audit witness: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
