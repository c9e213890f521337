"""The peers TeleOps is measured against, each started on a free loopback port in a temp dir.

- the bare Starlette app (B1),
- a real Prometheus Alertmanager 0.25 from Debian (B2, B3, B4), no clustering,
- a temporary PostgreSQL 15 server (the database for TeleOps' PostgreSQL runs), run as the
  unprivileged `postgres` user because postgres refuses to run as root.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.process import BenchError, Server, free_port, spawn, start_http, wait_http

__all__ = ["ALERTMANAGER", "PostgresServer", "start_alertmanager", "start_bare_app", "start_postgres"]

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


async def start_bare_app(workdir: Path) -> Server:
    """The bare Starlette app of bench/bare_app.py under uvicorn, ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    return await start_http(
        "bare Starlette",
        lambda port: [sys.executable, "-m", "bench.bare_app", str(port)],
        log_path=workdir / "bare.log",
    )


async def start_alertmanager(
    workdir: Path, *, webhook_url: str | None = None, group_wait: str = "30s", group_interval: str = "5m"
) -> Server:
    """Alertmanager with one route; to `webhook_url` when given, else a receiver that sends nothing."""
    if not Path(ALERTMANAGER).exists():
        raise BenchError(f"{ALERTMANAGER} is missing; install it with `apt-get install prometheus-alertmanager`")
    workdir.mkdir(parents=True, exist_ok=True)
    receiver: dict[str, object] = {"name": "bench"}
    if webhook_url is not None:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    config = {
        "route": {
            "receiver": "bench",
            "group_by": ["alertname", "instance"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = spawn(
        "Alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        port=port,
        log_path=workdir / "alertmanager.log",
    )
    try:
        await wait_http(server, "/-/ready")
    except BaseException:
        server.stop()
        raise
    return server


@dataclass
class PostgresServer:
    server: Server
    datadir: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://bench@127.0.0.1:{self.server.port}/teleops"

    def stop(self) -> None:
        self.server.stop(timeout=30)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *argv]


async def start_postgres(workdir: Path) -> PostgresServer:
    """A fresh PostgreSQL 15 cluster (fsync on: durable like production), database `teleops`, ready."""
    if not (PG_BIN / "postgres").exists():
        raise BenchError(f"{PG_BIN}/postgres is missing; install it with `apt-get install postgresql-15`")
    try:
        account = pwd.getpwnam(PG_USER)
    except KeyError as exc:
        raise BenchError("no `postgres` system user; the postgresql package creates it") from exc
    # The data directory must belong to the unprivileged user and the path to it be searchable by it,
    # so it lives in its own temp dir (workdir's parents are private to root).
    workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="teleops-bench-pg-"))
    home.chmod(0o755)
    datadir = home / "pgdata"
    datadir.mkdir(mode=0o700)
    os.chown(datadir, account.pw_uid, account.pw_gid)
    initdb = subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "bench", "--auth=trust", "-E", "UTF8"]),
        capture_output=True,
        text=True,
        check=False,
    )
    if initdb.returncode != 0:
        raise BenchError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
    port = free_port()
    server = spawn(
        "PostgreSQL",
        _as_postgres(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(datadir),
                "-p",
                str(port),
                "-k",
                str(datadir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ]
        ),
        port=port,
        log_path=workdir / "postgres.log",
    )
    # SIGINT is PostgreSQL's "fast shutdown": it does not wait for clients to disconnect.
    server.stop_signal = signal.SIGINT
    pg = PostgresServer(server, datadir)
    try:
        await _wait_postgres(server)
        created = subprocess.run(
            _as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "teleops"]),
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise BenchError(f"createdb failed: {created.stderr.strip()}")
    except BaseException:
        pg.stop()
        raise
    return pg


async def _wait_postgres(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive()
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port)], capture_output=True, check=False
        )
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"PostgreSQL did not become ready within {timeout:.0f}s:\n{server.log_tail()}")
        await asyncio.sleep(0.05)
