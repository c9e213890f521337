"""The fixtures of every registered source and what their parser makes of them (shared by test and regenerate)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teleops.server.json_body import loads_strict
from teleops.sources.registry import Source

__all__ = ["Fixture", "fixtures_of", "parsed_json", "render_expected"]

EXPECTED_SUFFIX = ".expected.json"


@dataclass(frozen=True)
class Fixture:
    source: Source
    body: Path

    @property
    def expected(self) -> Path:
        return self.body.with_name(self.body.name.removesuffix(".json") + EXPECTED_SUFFIX)

    @property
    def id(self) -> str:
        return f"{self.source.name}/{self.body.stem}"


def fixtures_of(source: Source) -> list[Fixture]:
    """Every request body in the source's fixtures/ folder (the reviewed outputs excluded), sorted by name."""
    folder = source.folder / "fixtures"
    bodies = sorted(p for p in folder.glob("*.json") if not p.name.endswith(EXPECTED_SUFFIX))
    return [Fixture(source, body) for body in bodies]


def parsed_json(fixture: Fixture) -> list[dict[str, Any]]:
    """The fixture read as the HTTP route reads it (strict JSON), parsed, as `Alert.to_json()` dicts."""
    body = loads_strict(fixture.body.read_bytes())
    return [alert.to_json() for alert in fixture.source.parse(body)]


def render_expected(alerts: list[dict[str, Any]]) -> str:
    return json.dumps(alerts, indent=2, ensure_ascii=False) + "\n"
