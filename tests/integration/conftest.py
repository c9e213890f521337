"""Fixtures that start real servers (see servers.py): `teleops_server` and `alertmanager_server` factories.

`postgres_server` is registered by tests/conftest.py, since the root `db_url` fixture uses it too.
"""

from __future__ import annotations

import pytest

from tests.integration.servers import alertmanager_server, teleops_server

__all__ = ["alertmanager_server", "teleops_server"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts real servers: mark it so `-m "not integration"` is quick."""
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
