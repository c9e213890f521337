"""Request bodies of the sources' real fixtures, as fresh dicts a test may change."""

from __future__ import annotations

import json
from typing import Any

from teleops.sources.registry import get_source


def fixture_body(source: str, name: str) -> Any:
    spec = get_source(source)
    assert spec is not None
    return json.loads((spec.folder / "fixtures" / f"{name}.json").read_text(encoding="utf-8"))
