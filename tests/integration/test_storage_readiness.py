"""Readiness says when storage cannot write (issue #18.6): a full disk, a read-only PostgreSQL. A real 20 MiB
tmpfs holds the SQLite database (the suite runs as root, as CI does), so "full" is a real ENOSPC, not a mock."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from teleops.config import Settings
from teleops.server.app import create_app
from teleops.server.services import Services
from teleops.store.database import MIN_FREE_BYTES, Database
from teleops.store.tokens import TokenKind
from tests.conftest import FakeClock
from tests.settings import settings_with


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: FakeClock) -> AsyncIterator[tuple[httpx.AsyncClient, Services, str]]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        await services.users.ensure("alice", "admin", now=clock())
        token = await services.tokens.create(TokenKind.API, "alice-cli", now=clock(), user_name="alice")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://teleops.test") as client:
            yield client, services, token


def fill(disk: Path, leave_bytes: int) -> None:
    """Write a ballast file until only about `leave_bytes` are free on `disk`."""
    stats = os.statvfs(disk)
    size = max(0, stats.f_bavail * stats.f_frsize - leave_bytes)
    with (disk / "ballast").open("wb") as out:
        out.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            written = out.write(chunk[: min(len(chunk), size)])
            size -= written
        out.flush()
        os.fsync(out.fileno())


async def test_a_nearly_full_disk_makes_readyz_503_and_freeing_it_makes_it_ready(
    small_disk: Path, tmp_path: Path, clock: FakeClock
) -> None:
    settings = settings_with(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite+aiosqlite:///{small_disk}/teleops.db"},
        local_agent={"enabled": False},
    )
    async with running(settings, clock) as (client, _services, _token):
        assert (await client.get("/readyz")).json()["status"] == "ready"
        fill(small_disk, leave_bytes=MIN_FREE_BYTES // 2)
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith(f"storage: the disk holding {small_disk}/teleops.db has ")
        assert "free disk space" in answer.json()["detail"]
        (small_disk / "ballast").unlink()
        assert (await client.get("/readyz")).json()["status"] == "ready"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_read_only_postgresql_is_not_ready(db_url: str, tmp_path: Path, clock: FakeClock) -> None:
    settings = settings_with(data_dir=tmp_path / "data", database={"url": db_url}, local_agent={"enabled": False})
    async with running(settings, clock) as (client, services, _token):
        assert (await client.get("/readyz")).json()["status"] == "ready"
        name = db_url.rsplit("/", 1)[1]
        admin = Database(db_url)
        try:
            async with admin.engine.connect() as conn:
                await conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
                await conn.commit()
        finally:
            await admin.close()
        await services.db.engine.dispose()  # new connections get the setting
        answer = await client.get("/readyz")
        assert answer.status_code == 503
        assert "read-only mode" in answer.json()["detail"]
