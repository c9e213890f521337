"""Hypothesis posts arbitrary JSON (and damaged copies of real fixtures) to every source endpoint.

The property: the answer is 200 or a 4xx with an explanation, never a 5xx; and a refused request
changes no row of the ingest tables. Runs on SQLite and PostgreSQL through the in-process `api` fixture.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleops.sources.registry import SOURCES, Source
from tests.integration import db_state

if TYPE_CHECKING:
    from tests.conftest import Api

EXAMPLES_PER_SOURCE = 60

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    # Values the parsers look for: statuses, times, numbers as text.
    | st.sampled_from(["firing", "resolved", "trigger", "resolve", "acknowledge", "alerting", "ok", "0", "1", "2"])
    | st.sampled_from(["2026-11-25T09:00:00Z", "0001-01-01T00:00:00Z", "1764061200", "not a time", ""])
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


def fixtures_of(source: Source) -> list[Any]:
    folder = source.folder / "fixtures"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if not p.name.endswith(".expected.json")]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (the root too)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _replace(document: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


@st.composite
def damaged_fixture(draw: st.DrawFn, source: Source) -> Any:
    """A real fixture of `source` with one to three values replaced by arbitrary JSON, or removed."""
    document = draw(st.sampled_from(fixtures_of(source)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        document = _replace(document, path, draw(json_values), delete=bool(path) and draw(st.booleans()))
    return document


def bodies(source: Source) -> st.SearchStrategy[bytes]:
    documents = json_values | damaged_fixture(source) if fixtures_of(source) else json_values
    return documents.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64)


@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
@settings(
    max_examples=EXAMPLES_PER_SOURCE,
    deadline=None,
    database=None,  # the same examples on every run of CI; no state left in .hypothesis/
    derandomize=True,
    # One app (and database) serves all examples of a source: state piles up on purpose, as in production.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_any_body_gets_200_or_an_explained_4xx_never_5xx(api: Api, source: Source, data: st.DataObject) -> None:
    body = data.draw(bodies(source), label="body")
    before = await db_state.ingest_state(api.services.db)
    response = await api.client.post(f"/api/v1/alerts/{source.name}", content=body, headers=api.ingest_headers)
    assert response.status_code == 200 or 400 <= response.status_code < 500, (response.status_code, response.text)
    if response.status_code == 200:
        assert response.json()["received"] == len(response.json()["results"])
    else:
        assert isinstance(response.json()["detail"], str), response.text
        # Only the ingest tables: deliveries of earlier accepted examples write others meanwhile.
        assert await db_state.ingest_state(api.services.db) == before, f"a {response.status_code} changed the database"


def test_fixture_files_exist_for_the_fuzzer() -> None:
    """The damaged-fixture strategy relies on each source shipping fixtures (the contract test checks them)."""
    assert [s.name for s in SOURCES if not fixtures_of(s)] == []
