"""A PostgreSQL primary switchover under two controller replicas: nothing acknowledged is lost (issue #23).

A real primary and a real streaming standby (pg_basebackup -R from the Debian PostgreSQL 15 binaries), with
synchronous replication (`synchronous_standby_names = '*'`, `synchronous_commit = on` for the TeleOps role), so a
commit is acknowledged only once the standby has it on disk. Two `teleops serve` replicas reach them through one
multi-host URL (`?host=A:PA&host=B:PB&target_session_attrs=read-write`): asyncpg tries the hosts in order and keeps
the one that takes writes. Alerts are sent to both replicas while the primary is killed with SIGKILL and the
standby promoted (and, having no standby of its own, told to stop waiting for one); a sender retries what was not
answered 2xx, as Alertmanager does. Afterwards every alert that
was answered 2xx, before or after the switch, is an incident on the new primary, exactly once, and ingest works
again within the issue's bound.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.integration.servers import (
    PG_BIN,
    PostgresServer,
    TeleopsServer,
    _run_coroutine,
    _unprivileged_user,
    free_port,
    start_postgres,
    start_teleops,
    stop_process,
    wait_until,
)

RECOVERS_WITHIN_S = 15.0  # the failover bound, for ingest after the promotion


@dataclass
class Standby:
    port: int
    data: Path
    process: subprocess.Popen[bytes]


@dataclass(frozen=True)
class Owner:
    """Who PostgreSQL runs as (it refuses root): the tests' unprivileged user, or None when we are not root."""

    uid: int | None
    gid: int | None

    @classmethod
    def find(cls) -> Owner:
        owner = _unprivileged_user()
        return cls(None, None) if owner is None else cls(owner.pw_uid, owner.pw_gid)

    @property
    def extra_groups(self) -> list[int] | None:
        return None if self.uid is None else []

    def take(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def _sql(url: str, query: str) -> list[asyncpg.Record]:
    return _run_coroutine(lambda: _fetch(url, query))


def _start_standby(primary: PostgresServer, workdir: Path) -> Standby:
    """pg_basebackup -R of `primary` into `workdir`, started as a hot standby on its own port."""
    owner = Owner.find()
    data, sockets = workdir / "standby", workdir / "standby-sockets"
    sockets.mkdir()
    owner.take(workdir)
    owner.take(sockets)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": primary.password, "LC_ALL": "C.UTF-8"}
    backup = subprocess.run(
        [
            *(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", primary.user),
            *("-D", str(data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        check=False,
        user=owner.uid,
        group=owner.gid,
        extra_groups=owner.extra_groups,
    )
    assert backup.returncode == 0, backup.stderr.decode(errors="replace")
    port = free_port()
    log = workdir / "standby.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(str(PG_BIN / "postgres"), "-D", str(data), "-k", str(sockets), "-p", str(port)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "hot_standby=on"),
            ],
            cwd=workdir,
            env={k: v for k, v in env.items() if k != "PGPASSWORD"},
            stdout=out,
            stderr=subprocess.STDOUT,
            user=owner.uid,
            group=owner.gid,
            extra_groups=owner.extra_groups,
        )
    ready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
    wait_until(lambda: subprocess.run(ready, check=False).returncode == 0, what="standby", process=process, log=log)
    return Standby(port=port, data=data, process=process)


def _kill_cluster(postmaster: subprocess.Popen[bytes]) -> None:
    """SIGKILL the postmaster we started and its children (backends, WAL sender), by PID, all at once."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster.pid:
            children.append(int(stat.parent.name))
    postmaster.send_signal(signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    postmaster.wait(10)


@dataclass
class Sender:
    """Sends distinct alerts round-robin to the replicas from `workers` threads, so several requests are in flight
    when the primary dies; an alert not answered 2xx is sent again (to the next replica) until it is, as a
    monitoring system retries. Records what was acknowledged, and when."""

    servers: list[TeleopsServer]
    workers: int = 4
    acknowledged: dict[str, float] = field(default_factory=dict)  # fingerprint -> monotonic time of its 2xx
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def acknowledged_after(self, moment: float) -> list[float]:
        with self._lock:
            return [at for at in self.acknowledged.values() if at > moment]

    def _run(self, worker: int) -> None:
        replicas = itertools.cycle(
            self.servers[worker % len(self.servers) :] + self.servers[: worker % len(self.servers)]
        )
        with httpx.Client(timeout=5) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                fingerprint = f"switchover-{worker}-{n}"
                body = {"summary": "switchover probe", "dedup_key": fingerprint, "host": "db", "severity": "warning"}
                while not self._stop.is_set():
                    server = next(replicas)
                    try:
                        answer = client.post(
                            f"{server.url}/api/v1/alerts/generic", json=body, headers=server.ingest_headers
                        )
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code < 300:
                        with self._lock:
                            self.acknowledged[fingerprint] = time.monotonic()
                        break
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.05)


@pytest.fixture
def pg_workdir() -> Iterator[Path]:
    """A directory the unprivileged PostgreSQL user can enter (pytest's tmp dirs are private to root)."""
    workdir = Path(tempfile.mkdtemp(prefix="teleops-switchover-"))
    workdir.chmod(0o755)
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def primary(pg_workdir: Path) -> Iterator[PostgresServer]:
    workdir = pg_workdir / "primary"
    workdir.mkdir()
    server = start_postgres(workdir)
    try:
        yield server
    finally:
        stop_process(server.process, timeout=20)


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_promoted_standby_keeps_every_acknowledged_alert_and_the_replicas_reconnect(
    primary: PostgresServer, pg_workdir: Path, tmp_path_factory: pytest.TempPathFactory, replicas: int
) -> None:
    database_url = primary.create_database()
    database = database_url.rsplit("/", 1)[1]
    # Acknowledged means on both: every commit of the TeleOps role waits for the standby to flush it.
    primary.execute(
        f"ALTER ROLE {primary.user} SET synchronous_commit = on",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    )
    (pg_workdir / "standby-home").mkdir()
    standby = _start_standby(primary, pg_workdir / "standby-home")
    try:
        admin = primary.url("postgres", driver="postgresql")
        wait_until(
            lambda: any(r["sync_state"] == "sync" for r in _sql(admin, "SELECT sync_state FROM pg_stat_replication")),
            what="the standby streaming synchronously",
        )
        hosts = f"host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
        url = (
            f"postgresql+asyncpg://{primary.user}:{primary.password}@/{database}?{hosts}"
            "&target_session_attrs=read-write"
        )
        servers = [start_teleops(tmp_path_factory.mktemp("replica0"), database_url=url)]
        for n in range(1, replicas):  # docs/replicas.md: the others start with the first one's key files
            servers.append(
                start_teleops(tmp_path_factory.mktemp(f"replica{n}"), database_url=url, keys_from=servers[0])
            )
        sender = Sender(servers)
        try:
            sender.start()
            wait_until(lambda: len(sender.acknowledged) >= 200, what="200 alerts acknowledged before the switch")
            before = len(sender.acknowledged)
            _kill_cluster(primary.process)  # the primary's machine dies: the postmaster and every backend at once

            killed_at = time.monotonic()
            promote = [str(PG_BIN / "pg_ctl"), "promote", "-w", "-D", str(standby.data)]
            owner = Owner.find()
            done = subprocess.run(
                promote,
                capture_output=True,
                check=False,
                user=owner.uid,
                group=owner.gid,
                extra_groups=owner.extra_groups,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            # The new primary has no standby of its own: with `synchronous_standby_names` still '*' (copied by
            # pg_basebackup) every commit would wait for ever. What an operator or Patroni does at promotion:
            new_admin = f"postgresql://{primary.user}:{primary.password}@127.0.0.1:{standby.port}/postgres"
            _sql(new_admin, "ALTER SYSTEM SET synchronous_standby_names = ''")
            _sql(new_admin, "SELECT pg_reload_conf()")
            promoted_at = time.monotonic()
            wait_until(
                lambda: bool(sender.acknowledged_after(promoted_at)),
                what="an alert acknowledged after the promotion",
                timeout=RECOVERS_WITHIN_S,
            )
            recovered_s = min(sender.acknowledged_after(promoted_at)) - killed_at
            wait_until(lambda: len(sender.acknowledged) >= before + 200, what="200 more alerts after the switch")
        finally:
            sender.stop()
            for server in servers:
                stop_process(server.process)
        new_primary = f"postgresql://{primary.user}:{primary.password}@127.0.0.1:{standby.port}/{database}"
        stored = [
            r["fingerprint"] for r in _sql(new_primary, "SELECT fingerprint FROM incidents WHERE source = 'generic'")
        ]
        missing = set(sender.acknowledged) - set(stored)
        assert not missing, f"{len(missing)} acknowledged alerts lost in the switchover: {sorted(missing)[:5]}"
        assert len(stored) == len(set(stored)), "an alert became two incidents"
        assert sender.refused > 0, "no request failed: the switch did not happen under load"
        print(  # the measured number, for the report
            f"replicas={replicas}: {len(sender.acknowledged)} acknowledged, {sender.refused} refused and retried, "
            f"ingest back {recovered_s:.2f}s after the primary was killed"
        )
    finally:
        stop_process(standby.process, timeout=20)
