"""Link codes: printed by `teleops user invite`, stored only as a hash, one use, expiring."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from teleops.cli import main
from teleops.store.database import Database
from teleops.store.identities import IdentityStore, LinkError
from teleops.store.schema import link_codes
from teleops.store.users import UserStore

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/ids.db")
    await db.migrate()
    await UserStore(db).ensure("bob", "operator", now=NOW)
    return db


async def test_code_is_hashed_at_rest_single_use_and_expires(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    store = IdentityStore(db)
    code = await store.invite("bob", now=NOW)
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(link_codes.c.code_hash))).scalars().all()
    assert code not in stored
    assert stored == [hashlib.sha256(code.encode()).hexdigest()]
    assert await store.link("telegram", "2002", code.lower(), now=NOW) == "bob"
    with pytest.raises(LinkError, match="already used"):
        await store.link("telegram", "3003", code, now=NOW)
    late = await store.invite("bob", now=NOW)
    with pytest.raises(LinkError, match="expired"):
        await store.link("telegram", "4004", late, now=NOW + timedelta(hours=25))
    assert await store.user_of("telegram", "4004") is None
    await db.close()


def test_cli_invite_prints_a_code_that_links(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path}/ids.db"
    asyncio.run(_prepare(tmp_path))  # creates user bob
    config = tmp_path / "teleops.yaml"
    config.write_text(f'database: {{url: "{db_url}"}}\n')
    result = CliRunner().invoke(main, ["user", "invite", "bob", "--config", str(config)])
    assert result.exit_code == 0, result.output
    code = result.stdout.strip().splitlines()[-1]

    async def link() -> str:
        db = Database(db_url)
        try:
            return await IdentityStore(db).link("telegram", "2002", code, now=datetime.now(UTC))
        finally:
            await db.close()

    assert asyncio.run(link()) == "bob"
    missing = CliRunner().invoke(main, ["user", "invite", "nobody", "--config", str(config)])
    assert missing.exit_code == 1
    assert "no user 'nobody'" in missing.output


async def _prepare(tmp_path: Path) -> None:
    db = await _db(tmp_path)
    await db.close()
