"""Real servers for the integration tests: PostgreSQL 15, Prometheus Alertmanager and `teleops serve`.

Every server binds 127.0.0.1 on a free port, keeps its data in a temp dir, and is stopped by its PID
(SIGTERM, then SIGKILL) when its fixture ends. Nothing here skips: a missing binary is an error that
says to run `scripts/test`, which installs the Debian packages.

Fixtures (registered by tests/conftest.py and tests/integration/conftest.py):

- `postgres_server` (session): one PostgreSQL cluster; `create_database()` gives each test its own
  migrated database in milliseconds (a copy of a template migrated once per session).
- `teleops_server` (factory): `teleops_server(**options)` starts `teleops serve` and returns a
  `TeleopsServer` with its URL and fresh ingest and API tokens.
- `alertmanager_server` (factory): `alertmanager_server(webhook_url, token)` starts Alertmanager with
  one webhook receiver and returns an `AlertmanagerServer`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import yaml

from teleops.domain.policy import DEFAULT_ROLES

__all__ = [
    "TEST_LEASES",
    "AlertmanagerServer",
    "PostgresServer",
    "ServerFailed",
    "TeleopsServer",
    "agent_online",
    "alertmanager_server",
    "free_port",
    "postgres_server",
    "start_agent",
    "start_alertmanager",
    "start_postgres",
    "start_teleops",
    "stop_process",
    "teleops_server",
    "wait_until",
]

T = TypeVar("T")

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ALERTMANAGER_BIN = Path("/usr/bin/prometheus-alertmanager")
START_TIMEOUT = 30.0
_PG_TEST_USER = "teleops-pgtest"  # created only when the machine has no `postgres` user


class ServerFailed(RuntimeError):
    """A server did not start (or stopped early); the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def eventually(check: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    """Poll `check` until it returns something truthy (and return that); fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float = START_TIMEOUT,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `ready` until it returns True. Raises ServerFailed (with the log tail) on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise ServerFailed(f"{what}: the process exited with code {process.returncode}\n{_log_tail(log)}")
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise ServerFailed(f"{what}: not ready after {timeout:.0f}s\n{_log_tail(log)}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when the caller's thread has a running loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, factory()).result()


# --- PostgreSQL ----------------------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The OS user to run postgres as (it refuses root): `postgres`, else a system user created for tests.

    None when we are not root: postgres then runs as ourselves.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _PG_TEST_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    # Not checked: a parallel test worker may create the same user first (useradd then exits 9).
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", _PG_TEST_USER],
        check=False,
    )
    return pwd.getpwnam(_PG_TEST_USER)


@dataclass
class PostgresServer:
    """A running PostgreSQL 15 cluster on 127.0.0.1:`port` with a password-protected superuser."""

    port: int
    user: str
    password: str
    workdir: Path
    process: subprocess.Popen[bytes]
    template: str = "teleops_template"
    _created: int = field(default=0, repr=False)

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.url("postgres", driver="postgresql"))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def execute(self, *statements: str) -> None:
        """Run SQL statements on the `postgres` maintenance database (CREATE/DROP DATABASE…)."""
        _run_coroutine(lambda: self._admin(*statements))

    def create_database(self) -> str:
        """A new database with the TeleOps schema already migrated; returns its SQLAlchemy URL."""
        self._created += 1
        name = f"t{os.getpid()}_{self._created}_{secrets.token_hex(3)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres(workdir: Path) -> PostgresServer:
    """initdb into `workdir` and start postgres on a free loopback port; migrate the template database.

    Raises ServerFailed when the binaries are missing or the server does not come up.
    """
    if not (PG_BIN / "postgres").is_file():
        raise ServerFailed(f"{PG_BIN}/postgres is missing; run scripts/test (it installs postgresql-15)")
    owner = _unprivileged_user()
    as_user: dict[str, Any] = {}
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    password = secrets.token_urlsafe(16)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    if owner is not None:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data, sockets, log = workdir / "data", workdir / "sockets", workdir / "postgres.log"
    sockets.mkdir()
    if owner is not None:
        os.chown(sockets, owner.pw_uid, owner.pw_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    initdb = subprocess.run(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "teleops",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        check=False,
        **as_user,
    )
    if initdb.returncode != 0:
        raise ServerFailed(f"initdb failed ({initdb.returncode}): {initdb.stderr.decode(errors='replace')}")
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-k",
                str(sockets),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            **as_user,
        )
    server = PostgresServer(port=port, user="teleops", password=password, workdir=workdir, process=process)
    try:
        wait_until(
            lambda: (
                subprocess.run(
                    [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
                ).returncode
                == 0
            ),
            what="postgres",
            process=process,
            log=log,
        )
        server.execute(f'CREATE DATABASE "{server.template}"')
        _run_coroutine(lambda: _migrate(server.url(server.template)))
    except BaseException:
        stop_process(process)
        raise
    return server


async def _migrate(url: str) -> None:
    from teleops.store.database import Database

    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 for the session; ask it for a database per test with `create_database()`."""
    workdir = Path(tempfile.mkdtemp(prefix="teleops-pg-"))
    server = start_postgres(workdir)
    try:
        yield server
    finally:
        stop_process(server.process, timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


# --- TeleOps ------------------------------------------------------------------------------------


@dataclass
class TeleopsServer:
    """A `teleops serve` subprocess. `ingest_token` and `api_token` (acting as `admin`) are fresh secrets."""

    url: str
    config_path: Path
    data_dir: Path
    database_url: str
    ingest_token: str
    api_token: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    @property
    def ingest_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ingest_token}"}

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"}

    @property
    def sqlite_path(self) -> Path:
        """The database file (SQLite servers only)."""
        prefix = "sqlite+aiosqlite:///"
        assert self.database_url.startswith(prefix), "this server runs on PostgreSQL"
        return Path(self.database_url.removeprefix(prefix))

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `teleops ARGS… --config <this server's config>` with the server's environment."""
        return run_teleops_cli(*args, "--config", str(self.config_path), env=self.env, check=check)

    def create_token(self, kind: str, name: str, *extra: str) -> str:
        """`teleops token create KIND NAME`: the secret is the last line of stdout (docs/architecture.md, "Public surface")."""
        return self.cli("token", "create", kind, name, *extra).stdout.strip().splitlines()[-1]

    def incidents(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        response = httpx.get(f"{self.url}/api/v1/incidents", params=params, headers=self.api_headers, timeout=10)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def incident(self, incident_id: int) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/incidents/{incident_id}", headers=self.api_headers, timeout=10)
        response.raise_for_status()
        detail: dict[str, Any] = response.json()
        return detail

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when the series does not exist yet)."""
        return _metric(httpx.get(f"{self.url}/metrics", timeout=10).text, name, labels)


def _metric(text: str, name: str, labels: Mapping[str, str]) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name != name:
            continue
        if all(f'{key}="{val}"' in label_text for key, val in labels.items()):
            total += float(value)
    return total


def run_teleops_cli(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `teleops` CLI of this checkout with this interpreter. Raises ServerFailed when it fails and `check`."""
    result = subprocess.run(
        [sys.executable, "-m", "teleops.cli", *args],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ServerFailed(f"teleops {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def start_agent(
    server: TeleopsServer,
    name: str,
    folder: Path,
    *,
    allow: tuple[str, ...],
    labels: tuple[str, ...] = (),
    state_dir: Path | None = None,
    program: tuple[str, ...] = (sys.executable, "-m", "teleops"),
    token: str | None = None,
) -> subprocess.Popen[bytes]:
    """`teleops agent` as docs/install-agent.md runs it, with `token` (default: a fresh agent token for `name`),
    the policy `allow`, and its log in `folder`/agent.log; `program` is the `teleops` to run (default: this
    checkout's)."""
    folder.mkdir(parents=True, exist_ok=True)
    token_file, policy = folder / "agent.token", folder / "agent-policy.yaml"
    token_file.write_text((token or server.create_token("agent", name)) + "\n")
    token_file.chmod(0o600)
    policy.write_text(yaml.safe_dump({"allow": list(allow)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEOPS_", "VIRTUAL_ENV"))}
    argv = [*program, "agent", "--server", server.url, "--name", name, "--token-file", str(token_file)]
    argv += ["--policy", str(policy), "--state-dir", str(state_dir or folder / "state")]
    argv += [f"--label={label}" for label in labels]
    with (folder / "agent.log").open("wb") as out:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def agent_online(server: TeleopsServer, name: str, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Whether `GET /api/v1/agents` lists `name` online (fails the test if `process`, its agent, has exited)."""
    if process is not None and process.poll() is not None:
        pytest.fail(f"agent {name} exited with {process.returncode}")
    items = httpx.get(f"{server.url}/api/v1/agents", headers=server.api_headers, timeout=10).json()["items"]
    return any(item["name"] == name and item["online"] for item in items)


# The built-in policy, except that `admin` (who the API token acts as) changes hosts without a one-time code: these
# tests drive commands through the API, not step-up. The step-up default has its own tests
# (tests/security/test_stepup_default.py). A test's own `policy` replaces this one.
ADMIN_WITHOUT_STEPUP: dict[str, Any] = {
    "roles": {
        "operator": [dict(rule) for rule in DEFAULT_ROLES["operator"]],
        "admin": [{"hosts": ["*"], "commands": ["*"], "require_2fa": False}],
    }
}


# The key files every replica on one database must share (docs/replicas.md, "Key files").
REPLICA_KEY_FILES = ("argv.key", "twofactor.key")


# Replicas on PostgreSQL hand singletons and claimed work over after a lease (docs/replicas.md); the tests wait
# for hand-overs, so their replicas use 5 s instead of the default 10 s. Not the 3 s minimum: a loaded CI machine
# can stall an event loop for a second, and a holder renews only every third of its lease.
TEST_LEASES = {"singleton_lease_ttl": "5s", "work_lease": "5s"}


def start_teleops(
    workdir: Path,
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    local_agent: bool = False,
    config: Mapping[str, Any] | None = None,
    keys_from: TeleopsServer | None = None,
) -> TeleopsServer:
    """Start `teleops serve` with a config file in `workdir`, wait for /readyz, create an ingest and an API token.

    `database_url` defaults to SQLite in `workdir`; `env` adds TELEOPS_* overrides; `config` adds
    top-level sections to the YAML. `keys_from`: another replica on the same database, whose key files this one
    gets first (docs/replicas.md, "Key files"). Raises ServerFailed (with the server's log) when it does not come up.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    if keys_from is not None:
        data_dir.mkdir(mode=0o700, exist_ok=True)
        for name in REPLICA_KEY_FILES:
            shutil.copy2(keys_from.data_dir / name, data_dir / name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database_url = database_url or f"sqlite+aiosqlite:///{data_dir}/teleops.db"
    document: dict[str, Any] = {
        "data_dir": str(data_dir),
        "server": {"listen": f"127.0.0.1:{port}", "public_url": url},
        "database": {"url": database_url, **(TEST_LEASES if database_url.startswith("postgresql") else {})},
        "local_agent": {"enabled": local_agent},
        "policy": ADMIN_WITHOUT_STEPUP,
        **(config or {}),
    }
    config_path = workdir / "teleops.yaml"
    config_path.write_text(yaml.safe_dump(document))
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEOPS_")}
    server_env.update(env or {})
    log = workdir / "teleops.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "teleops.cli", "serve", "--config", str(config_path)],
            cwd=workdir,
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _http_ok(f"{url}/readyz"), what="teleops serve", process=process, log=log)
        server = TeleopsServer(
            url=url,
            config_path=config_path,
            data_dir=data_dir,
            database_url=database_url,
            ingest_token="",
            api_token="",
            process=process,
            log=log,
            env=server_env,
        )
        suffix = secrets.token_hex(3)
        server.ingest_token = server.create_token("ingest", f"it-sender-{suffix}")
        server.api_token = server.create_token("api", f"it-cli-{suffix}", "--user", "admin")
    except BaseException:
        stop_process(process)
        raise
    return server


@pytest.fixture
def teleops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., TeleopsServer]]:
    """Factory: `teleops_server(database_url=…, env={…}, local_agent=True, config={…})` → a running server.

    Every server started through it is stopped by PID when the test ends.
    """
    started: list[TeleopsServer] = []

    def start(**options: Any) -> TeleopsServer:
        server = start_teleops(tmp_path_factory.mktemp("teleops"), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process)


# --- Alertmanager -------------------------------------------------------------------------------


@dataclass
class AlertmanagerServer:
    """A running Prometheus Alertmanager with one webhook receiver (`teleops`)."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST to /api/v2/alerts, as Prometheus does. Raises httpx.HTTPStatusError unless 200."""
        httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of matching samples of Alertmanager's own /metrics."""
        return _metric(httpx.get(f"{self.url}/metrics", timeout=10).text, name, labels)


def start_alertmanager(
    workdir: Path,
    webhook_url: str,
    token: str,
    *,
    group_wait: str = "0s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> AlertmanagerServer:
    """Start Alertmanager (gossip off) whose receiver posts to `webhook_url` with `Authorization: Bearer token`.

    Raises ServerFailed when the binary is missing or the server does not get ready.
    """
    if not ALERTMANAGER_BIN.is_file():
        raise ServerFailed(f"{ALERTMANAGER_BIN} is missing; run scripts/test (it installs prometheus-alertmanager)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "route": {
            "receiver": "teleops",
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "teleops",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            }
        ],
    }
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(ALERTMANAGER_BIN),
                f"--config.file={config_path}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: _http_ok(f"{url}/-/ready"), what="alertmanager", process=process, log=log)
    except BaseException:
        stop_process(process)
        raise
    return AlertmanagerServer(url=url, process=process, workdir=workdir, log=log)


@pytest.fixture
def alertmanager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: `alertmanager_server(webhook_url, token, group_interval="1s", …)` → a running Alertmanager."""
    started: list[AlertmanagerServer] = []

    def start(webhook_url: str, token: str, **options: str) -> AlertmanagerServer:
        server = start_alertmanager(tmp_path_factory.mktemp("alertmanager"), webhook_url, token, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process)
