"""`UserStore.get` answers from a short cache (every API command reads its user): a role set by `ensure` (the
config at start) is seen at once, an unknown name is never cached, and a change made elsewhere shows within
CACHE_SECONDS."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Connection

from teleops.store import users as users_module
from teleops.store.database import Database
from teleops.store.schema import users
from teleops.store.users import UserStore

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


async def _role(store: UserStore, name: str) -> str:
    record = await store.get(name)
    assert record is not None
    return record.role


def _set_role(conn: Connection, name: str, role: str) -> None:
    conn.execute(update(users).where(users.c.name == name).values(role=role))


async def test_ensure_is_seen_at_once_and_a_change_elsewhere_within_the_cache_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(db)
    assert await store.get("bob") is None  # not cached: creating bob is seen at once
    await store.ensure("bob", "viewer", now=NOW)
    assert await _role(store, "bob") == "viewer"
    await store.ensure("bob", "operator", now=NOW)  # the config changed at a start
    assert await _role(store, "bob") == "operator"

    await db.run_in_transaction(_set_role, "bob", "admin")  # another process or replica
    assert await _role(store, "bob") == "operator"
    clock = [0.0]
    monkeypatch.setattr(users_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    store = UserStore(db)
    assert await _role(store, "bob") == "admin"
    await db.run_in_transaction(_set_role, "bob", "viewer")
    clock[0] = users_module.CACHE_SECONDS + 0.1
    assert await _role(store, "bob") == "viewer"
