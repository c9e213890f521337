"""Every registered source: documented, with fixtures, and each fixture parses to its reviewed `*.expected.json`.

After an intended parser change run `python -m tests.contract.regenerate` and review the diff.
"""

from __future__ import annotations

import json

import pytest

from teleops.sources.registry import SOURCES, Source, get_source

from .source_fixtures import EXPECTED_SUFFIX, Fixture, fixtures_of, parsed_json

ALL_FIXTURES = [fixture for source in SOURCES for fixture in fixtures_of(source)]


def test_registry_lists_every_source_folder_once() -> None:
    names = [source.name for source in SOURCES]
    assert names == ["alertmanager", "grafana", "sensu", "zabbix", "pagerduty", "generic"]
    folder = SOURCES[0].folder.parent
    on_disk = sorted(p.name for p in folder.iterdir() if (p / "parse.py").exists())
    assert on_disk == sorted(names), "a source folder exists that registry.SOURCES does not list (or the reverse)"
    for name in names:
        assert get_source(name) is not None


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_source_has_a_readme_showing_its_url_and_token(source: Source) -> None:
    readme = (source.folder / "README.md").read_text(encoding="utf-8")
    assert f"/api/v1/alerts/{source.name}" in readme
    assert "Authorization: Bearer" in readme or "Bearer" in readme
    assert "teleops token create ingest" in readme


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_source_has_at_least_two_fixtures_each_with_a_reviewed_expectation(source: Source) -> None:
    fixtures = fixtures_of(source)
    assert len(fixtures) >= 2, f"{source.name} needs at least two fixtures"
    for fixture in fixtures:
        assert fixture.expected.exists(), f"{fixture.expected} is missing; run python -m tests.contract.regenerate"
    orphans = [
        p.name
        for p in (source.folder / "fixtures").glob(f"*{EXPECTED_SUFFIX}")
        if not p.with_name(p.name.removesuffix(EXPECTED_SUFFIX) + ".json").exists()
    ]
    assert orphans == []


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=lambda f: f.id)
def test_fixture_parses_to_its_reviewed_expectation(fixture: Fixture) -> None:
    expected = json.loads(fixture.expected.read_text(encoding="utf-8"))
    assert parsed_json(fixture) == expected


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=lambda f: f.id)
def test_fixture_alerts_belong_to_their_source_and_fit_storage(fixture: Fixture) -> None:
    for alert in parsed_json(fixture):
        assert alert["source"] == fixture.source.name
        assert 0 < len(alert["fingerprint"]) <= 255
        assert 0 < len(alert["name"]) <= 255
        assert alert["host"] is None or 0 < len(alert["host"]) <= 255
