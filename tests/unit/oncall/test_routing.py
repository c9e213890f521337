"""Golden table: which team each alert goes to."""

from __future__ import annotations

import pytest

from teleops.config.oncall import RouteSettings
from teleops.oncall.routing import route_team

ROUTES = [
    RouteSettings(team="db", labels={"service": "postgres*"}),
    RouteSettings(team="db", labels={"team": "db"}),
    RouteSettings(team="web", source=["grafana"], severity=["critical", "error"], labels={"service": "web-*"}),
    RouteSettings(team="web", labels={"service": "web-*", "env": "prod"}),
    RouteSettings(team="security", source=["pagerduty"]),
]

GOLDEN = [
    # source, severity, labels, team, route index
    ("alertmanager", "critical", {"service": "postgres-main"}, "db", 0),
    ("alertmanager", "warning", {"service": "postgres"}, "db", 0),
    ("alertmanager", "warning", {"service": "Postgres"}, "default", None),  # case-sensitive
    ("sensu", "info", {"team": "db"}, "db", 1),
    ("sensu", "info", {"team": "dba"}, "default", None),
    ("grafana", "critical", {"service": "web-api"}, "web", 2),
    ("grafana", "error", {"service": "web-api"}, "web", 2),
    ("grafana", "warning", {"service": "web-api"}, "default", None),
    ("alertmanager", "critical", {"service": "web-api"}, "default", None),
    ("alertmanager", "critical", {"service": "web-api", "env": "prod"}, "web", 3),
    ("alertmanager", "critical", {"service": "web-api", "env": "staging"}, "default", None),
    ("alertmanager", "critical", {"env": "prod"}, "default", None),  # missing label never matches
    ("pagerduty", "critical", {}, "security", 4),
    ("pagerduty", "critical", {"service": "postgres"}, "db", 0),  # first matching route wins
    ("generic", "unknown", {}, "default", None),
    ("zabbix", "critical", {"service": ""}, "default", None),
]


@pytest.mark.parametrize(("source", "severity", "labels", "team", "index"), GOLDEN)
def test_route_table(source: str, severity: str, labels: dict[str, str], team: str, index: int | None) -> None:
    assert route_team(ROUTES, source=source, severity=severity, labels=labels) == (team, index)


def test_no_routes_means_the_default_team() -> None:
    assert route_team([], source="alertmanager", severity="critical", labels={"a": "b"}) == ("default", None)
