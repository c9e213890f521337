"""`teleops serve` as a separate process on a temp config, with an ingest token made by the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.process import BenchError, Server, free_port, spawn, wait_http

__all__ = ["TeleOps", "create_token", "share_keys", "start_teleops", "write_config"]

TELEOPS = [sys.executable, "-m", "teleops.cli"]


@dataclass
class TeleOps:
    server: Server
    config: Path
    ingest_token: str

    @property
    def port(self) -> int:
        return self.server.port


# The key files every replica on one database must share (docs/replicas.md, "Key files").
REPLICA_KEY_FILES = ("argv.key", "twofactor.key")


def share_keys(first_workdir: Path, workdir: Path) -> None:
    """Give the replica about to start in `workdir` the key files of the one started in `first_workdir`."""
    (workdir / "data").mkdir(parents=True, mode=0o700, exist_ok=True)
    for name in REPLICA_KEY_FILES:
        shutil.copy2(first_workdir / "data" / name, workdir / "data" / name)


def write_config(workdir: Path, *, port: int, db_url: str, extra: dict[str, object] | None = None) -> Path:
    """A config file for a bench controller: loopback port, the given database, no local agent."""
    config: dict[str, object] = {
        "data_dir": str(workdir / "data"),
        "server": {"listen": f"127.0.0.1:{port}"},
        "database": {"url": db_url},
        "local_agent": {"enabled": False},
        "log_level": "warning",
        # The benchmarks drive ingest far above the per-token rate limits (docs/ingest-limits.md) on purpose: they
        # measure the durable path, so the limiter is off here (`extra` may switch it back on).
        "ingest": {"limits": dict.fromkeys(("alertmanager", "grafana", "generic", "pagerduty", "zabbix", "sensu"))},
    }
    config.update(extra or {})
    path = workdir / "teleops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def create_token(config: Path, kind: str, name: str, *extra: str) -> str:
    """`teleops token create KIND NAME`; the secret is the last stdout line. Raises BenchError."""
    done = subprocess.run(
        [*TELEOPS, "token", "create", kind, name, *extra, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"`teleops token create {kind} {name}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


async def start_teleops(
    workdir: Path,
    *,
    db_url: str | None = None,
    extra_config: dict[str, object] | None = None,
    sender: str = "bench",
    keys_from: TeleOps | None = None,
) -> TeleOps:
    """Start `teleops serve` in `workdir` (SQLite there unless `db_url`), wait for /readyz, make a token (a second
    replica on the same database needs another `sender` name for its ingest token, and `keys_from`: the first
    replica, whose key files it gets)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if keys_from is not None:
        share_keys(keys_from.config.parent, workdir)
    port = free_port()
    url = db_url or f"sqlite+aiosqlite:///{workdir}/teleops.db"
    config = write_config(workdir, port=port, db_url=url, extra=extra_config)
    server = spawn(
        "teleops serve", [*TELEOPS, "serve", "--config", str(config)], port=port, log_path=workdir / "serve.log"
    )
    try:
        await wait_http(server, "/readyz", timeout=60)
        token = create_token(config, "ingest", sender)
    except BaseException:
        server.stop()
        raise
    return TeleOps(server, config, token)
