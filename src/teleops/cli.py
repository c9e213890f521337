"""The `teleops` command. Exit codes: 0 ok, 1 error, 2 usage, 78 bad config."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from teleops.config import ConfigError, Settings, find_config_file, load_settings
from teleops.config.logging import configure_logging

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_CONFIG = 78
T = TypeVar("T")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $TELEOPS_CONFIG, else ./teleops.yaml, else the embedded default).",
)


def _settings(config_path: Path | None) -> Settings:
    try:
        return load_settings(find_config_file(config_path))
    except ConfigError as exc:
        click.echo(f"teleops: bad configuration:\n{exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _fail(message: str) -> None:
    click.echo(f"teleops: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    from teleops.store.database import StorageUnavailable

    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except StorageUnavailable as exc:
        _fail(f"database unavailable: {exc}. Check database.url and that the server is up.")
        raise AssertionError("unreachable") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="teleops")
def main() -> None:
    """TeleOps: alerts in your chat, commands on the alerting host, and a memory of what fixed it."""


@main.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the controller (HTTP API, webhooks, web console, local agent)."""
    import uvicorn

    from teleops.server.app import create_app

    settings = _settings(config_path)
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
        )
    )

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        # The banner (first-start credentials, the curl example) is printed once the port accepts
        # connections, so what it tells a person to run works at once.
        while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn offers only a flag)
            await asyncio.sleep(0.05)
        if server.started:
            click.echo(f"TeleOps listening on {settings.server.base_url()} (database: {_db_kind(settings)})")
            for text in announcements:
                click.echo(text)
        await serving

    asyncio.run(run())
    if not server.started:
        _fail(f"could not start on {settings.server.listen}; is another process using that port? (see the log above)")


def _db_kind(settings: Settings) -> str:
    return "SQLite" if settings.database.url.startswith("sqlite") else "PostgreSQL"


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path | None) -> None:
    """Apply all migrations (serve does this too)."""
    from teleops.store.database import Database

    settings = _settings(config_path)

    async def run() -> None:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
        finally:
            await database.close()

    _run(run)
    click.echo("database schema is up to date")


@main.group()
def config() -> None:
    """Configuration."""


@config.command("check")
@config_option
def config_check(config_path: Path | None) -> None:
    """Validate the configuration and print where it came from."""
    path = find_config_file(config_path)
    settings = _settings(config_path)
    click.echo(
        f"configuration OK ({path or 'embedded default'}); database: {_db_kind(settings)}, "
        f"listen: {settings.server.listen}, users: {len(settings.users)}"
    )


@main.group()
def token() -> None:
    """API, ingest and agent tokens."""


@token.group("create")
def token_create() -> None:
    """Create a token; the secret is printed alone on the last line, once."""


def _create_token(config_path: Path | None, kind: str, name: str, user: str | None) -> None:
    from teleops.server.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.tokens import TokenExists, TokenKind, TokenStore
    from teleops.store.users import UserStore

    settings = _settings(config_path)

    async def run() -> str:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            if user is not None and await UserStore(database).get(user) is None:
                _fail(f"no user {user!r}; users come from the `users:` config section (and `admin`)")
            secret = await TokenStore(database).create(
                TokenKind(kind), name, now=system_clock(), user_name=user, by="cli"
            )
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            return secret
        except TokenExists as exc:
            _fail(str(exc))
            raise
        finally:
            await database.close()

    secret = _run(run)
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
    from teleops.server.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.tokens import TokenKind, TokenStore

    settings = _settings(config_path)

    async def run() -> bool:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            revoked = await TokenStore(database).revoke(TokenKind(kind), name, now=system_clock(), by="cli")
            await CheckpointLog(settings.data_dir).checkpoint(database)  # audited: anchor it before exiting
            return revoked
        finally:
            await database.close()

    if not _run(run):
        _fail(f"no live {kind} token named {name!r}")
    click.echo(f"revoked {kind} token {name!r}")


MIN_PASSWORD_LENGTH = 10


@main.group()
def user() -> None:
    """People: web console passwords."""


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
@click.option("--generate", is_flag=True, help="Generate a random password and print it alone on the last line.")
@config_option
def user_set_password(name: str, password_stdin: bool, generate: bool, config_path: Path | None) -> None:
    """Set the web console password of user NAME (prompts for it unless --password-stdin or --generate)."""
    import secrets

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
        _fail(f"the password is too short ({len(password)} characters); use at least {MIN_PASSWORD_LENGTH}")
    settings = _settings(config_path)

    async def run() -> bool:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            return await UserStore(database).set_password(name, password)
        finally:
            await database.close()

    if not _run(run):
        _fail(
            f"no user {name!r}; users come from the `users:` config section, and `admin` is created "
            "by the first `teleops serve`"
        )
    click.echo(f"password of {name!r} set; log in at {settings.server.base_url()}/ui/login", err=True)
    if generate:
        click.echo(password)


def _twofactor_admin(config_path: Path | None, name: str, action: str) -> str | bool:
    """Enrol or unlock NAME's TOTP, audited, with the audit head checkpointed before returning."""
    from teleops.server.clock import system_clock
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database
    from teleops.store.twofactor import TwoFactorStore
    from teleops.store.users import UserStore

    settings = _settings(config_path)

    async def run() -> str | bool:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            configured = {u.name for u in settings.users}
            if name not in configured and await UserStore(database).get(name) is None:
                _fail(f"no user {name!r}; users come from the `users:` config section (and `admin`)")
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

    return _run(run)


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
        _fail(f"{name!r} has no authenticator enrolled; enrol with `teleops user 2fa-enroll {name}`")
    click.echo(f"2FA of {name!r} unlocked")


@user.command("invite")
@click.argument("name")
@config_option
def user_invite(name: str, config_path: Path | None) -> None:
    """A one-time code (valid 24 h) that NAME sends to the bot as `/link CODE`; printed alone on the last line."""
    from teleops.server.clock import system_clock
    from teleops.store.database import Database
    from teleops.store.identities import LINK_CODE_TTL, IdentityStore
    from teleops.store.users import UserStore

    settings = _settings(config_path)

    async def run() -> str | None:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            if await UserStore(database).get(name) is None:
                return None
            return await IdentityStore(database).invite(name, now=system_clock())
        finally:
            await database.close()

    code = _run(run)
    if code is None:
        _fail(f"no user {name!r}; declare it under `users:` in the config (serve creates it) and try again")
        return
    hours = int(LINK_CODE_TTL.total_seconds() // 3600)
    click.echo(f"link code for {name!r}, valid {hours} h, usable once: they send `/link CODE` to the bot", err=True)
    click.echo(code)


@main.command()
@click.argument("source")
@click.argument("fixture")
@click.option("--server", "server_url", default=None, help="Base URL (default: server.public_url or listen).")
@click.option(
    "--token",
    "token_value",
    envvar="TELEOPS_INGEST_TOKEN",
    required=True,
    help="Ingest token (or $TELEOPS_INGEST_TOKEN).",
)
@config_option
def simulate(source: str, fixture: str, server_url: str | None, token_value: str, config_path: Path | None) -> None:
    """Replay FIXTURE (a file, or a fixture name of SOURCE such as `firing`) into a running server."""
    import httpx

    from teleops.sources.registry import SOURCES, get_source

    spec = get_source(source)
    if spec is None:
        click.echo(f"teleops: unknown source {source!r}; use one of: {', '.join(s.name for s in SOURCES)}", err=True)
        sys.exit(2)
    path = Path(fixture)
    if not path.is_file():
        path = spec.folder / "fixtures" / f"{fixture.removesuffix('.json')}.json"
    if not path.is_file():
        names = sorted(p.stem for p in (spec.folder / "fixtures").glob("*.json") if ".expected" not in p.name)
        _fail(f"no fixture {fixture!r}; {source} has: {', '.join(names)}")
    base = server_url or _settings(config_path).server.base_url()
    try:
        response = httpx.post(
            f"{base.rstrip('/')}/api/v1/alerts/{source}",
            content=path.read_bytes(),
            headers={"Authorization": f"Bearer {token_value}", "Content-Type": "application/json"},
            timeout=10,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}. Is `teleops serve` running?")
        return
    click.echo(f"{response.status_code} {json.dumps(response.json()) if _is_json(response) else response.text}")
    if response.status_code >= 300:
        sys.exit(EXIT_ERROR)


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("content-type", "")


@main.group()
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
    from teleops.pipeline.command_line import CommandLineError, split_command

    settings = _settings(config_path)
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


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _audit_parts(settings: Settings) -> tuple[Any, Any]:
    from teleops.store.audit_checkpoints import CheckpointLog
    from teleops.store.database import Database

    database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
    return database, CheckpointLog(settings.data_dir)


@audit.command("verify")
@config_option
def audit_verify(config_path: Path | None) -> None:
    """Check the hash chain and the checkpoints outside the database. Exit 0 when intact, 1 with the first bad
    record when it was edited, deleted, reordered, truncated or re-chained."""
    from teleops.store.audit_verify import Finding, verify_audit

    settings = _settings(config_path)

    async def run() -> Finding:
        database, checkpoints = _audit_parts(settings)
        try:
            await database.migrate()
            return await verify_audit(database, checkpoints)
        finally:
            await database.close()

    finding = _run(run)
    if finding.ok:
        click.echo(
            f"audit log intact: {finding.events} events, head seq {finding.head_seq}, "
            f"{finding.checkpoints} checkpoints checked"
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

    settings = _settings(config_path)

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

    for line in _run(run):
        click.echo(line)


@main.command()
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
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Trust only this CA for wss:// (pin the controller's CA).",
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
    ca_file: Path | None,
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
        ca_file=ca_file,
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


@main.group()
def incident() -> None:
    """Incidents (scenarios): export one for a postmortem."""


@incident.command("export")
@click.argument("incident_id", type=click.IntRange(min=1))
@click.option("--format", "fmt", type=click.Choice(["md"]), default="md", show_default=True, help="Output format.")
@config_option
def incident_export(incident_id: int, fmt: str, config_path: Path | None) -> None:
    """Print INCIDENT_ID as a postmortem-ready Markdown timeline (times, actors, commands, outputs, notes)."""
    from teleops.memory.export import export_incident
    from teleops.store.database import Database
    from teleops.store.incidents import IncidentNotFound

    settings = _settings(config_path)

    async def run() -> str | None:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            return await export_incident(database, incident_id)
        except IncidentNotFound:
            return None
        finally:
            await database.close()

    text = _run(run)
    if text is None:
        _fail(f"incident {incident_id} does not exist; list them with GET /api/v1/incidents or the web UI")
    click.echo(text, nl=False)


@main.group()
def runbook() -> None:
    """Runbooks (memory.runbooks_dir): propose one from what fixed an alert before."""


@runbook.command("suggest")
@click.argument("alertname")
@config_option
def runbook_suggest(alertname: str, config_path: Path | None) -> None:
    """Print a runbook YAML for ALERTNAME built from the fixes that stuck, for a person to review."""
    from datetime import timedelta

    from teleops.config.settings import parse_duration
    from teleops.memory.learned_runbooks import suggest_runbook
    from teleops.memory.recurrence import MemoryWindows
    from teleops.store.database import Database

    settings = _settings(config_path)
    windows = MemoryWindows(
        fix_window=timedelta(seconds=parse_duration(settings.memory.fix_window)),
        lookback=timedelta(seconds=parse_duration(settings.memory.lookback)),
    )

    async def run() -> tuple[str, int]:
        database = Database(settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms)
        try:
            await database.migrate()
            text, evidence = await suggest_runbook(database, alertname, windows=windows)
            return text, len(evidence)
        finally:
            await database.close()

    text, found = _run(run)
    if not found:
        _fail(
            f"no scenario of {alertname!r} ended in a fix that stuck (a command that succeeded before a resolution "
            f"that held for {settings.memory.fix_window}); nothing to propose yet. Check the alert name's spelling"
        )
    click.echo(text, nl=False)


if __name__ == "__main__":
    main()
