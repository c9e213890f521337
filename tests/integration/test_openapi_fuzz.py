"""schemathesis over /openapi.json against a real `teleops serve` (SQLite and PostgreSQL).

Every operation of the published schema gets generated requests, with valid tokens so they get past
authentication. The checks: no 5xx, only documented status codes, and bodies, content types and
headers that match the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation

from teleops.server.app import create_app
from tests.integration.servers import PostgresServer, TeleopsServer, start_teleops, stop_process
from tests.settings import settings_with

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def _published_schema() -> schemathesis.BaseSchema:
    """The schema the app publishes at /openapi.json, built without starting it (to list the operations)."""
    app = create_app(settings_with(local_agent={"enabled": False}))
    return schemathesis.openapi.from_dict(app.openapi())


SCHEMA = _published_schema()
OPERATIONS: list[APIOperation[Any, Any, Any, Any]] = [
    result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)
]
assert len(OPERATIONS) == len(list(SCHEMA.get_all_operations())), "an operation of our own schema did not parse"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeleopsServer]:
    """One `teleops serve` per backend for the whole module, with one incident in it to find."""
    database_url = None
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = postgres.create_database()
    server = start_teleops(tmp_path_factory.mktemp("openapi"), database_url=database_url)
    try:
        fixture = Path(__file__).parents[2] / "src/teleops/sources/alertmanager/fixtures/firing.json"
        seeded = httpx.post(
            f"{server.url}/api/v1/alerts/alertmanager", content=fixture.read_bytes(), headers=server.ingest_headers
        )
        assert seeded.status_code == 200, seeded.text
        yield server
    finally:
        stop_process(server.process)


def test_the_published_schema_has_the_contract_operations() -> None:
    labels = {op.label for op in OPERATIONS}
    assert {"POST /api/v1/alerts/{source}", "GET /api/v1/incidents", "GET /api/v1/incidents/{incident_id}"} <= labels


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_operation_conforms_and_never_fails_with_5xx(
    live: TeleopsServer, operation: APIOperation[Any, Any, Any, Any]
) -> None:
    token = live.ingest_token if operation.path.startswith("/api/v1/alerts/") else live.api_token

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    check()
