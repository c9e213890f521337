"""Which team an alert belongs to: the first route whose every condition matches, else the default team."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from teleops.config.oncall import DEFAULT_TEAM, RouteSettings

__all__ = ["route_team"]


def route_team(
    routes: Sequence[RouteSettings], *, source: str, severity: str, labels: Mapping[str, str]
) -> tuple[str, int | None]:
    """(team, index of the matching route) — `(DEFAULT_TEAM, None)` when no route matches.

    A route matches when the source is in its `source` list (or the list is empty), likewise the
    severity, and every label glob matches that label's value (a missing label never matches).
    Matching is case-sensitive, like Prometheus label matching.
    """
    for index, route in enumerate(routes):
        if route.source and source not in route.source:
            continue
        if route.severity and severity not in route.severity:
            continue
        if all(name in labels and fnmatchcase(labels[name], pattern) for name, pattern in route.labels.items()):
            return route.team, index
    return DEFAULT_TEAM, None
