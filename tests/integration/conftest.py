"""Fixtures that start real servers (see servers.py): `teleops_server` and `alertmanager_server` factories, and
`db`: a migrated database on each backend (SQLite and PostgreSQL, through the root `db_url`).

`postgres_server` is registered by tests/conftest.py, since the root `db_url` fixture uses it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from teleops.store.database import Database
from tests.integration.servers import alertmanager_server, teleops_server

__all__ = ["alertmanager_server", "db", "teleops_server"]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated, empty database (a module may override it to add rows)."""
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts real servers: mark it so `-m "not integration"` is quick."""
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
