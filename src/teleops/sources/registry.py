"""Every alert source TeleOps accepts, listed explicitly. Adding a source: one folder, one line here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from teleops.domain.alert import Alert
from teleops.sources.alertmanager.parse import parse_alertmanager
from teleops.sources.generic.parse import parse_generic
from teleops.sources.grafana.parse import parse_grafana
from teleops.sources.pagerduty.parse import parse_pagerduty
from teleops.sources.sensu.parse import parse_sensu
from teleops.sources.zabbix.parse import parse_zabbix

__all__ = ["SOURCES", "Source", "get_source"]


class Source(NamedTuple):
    name: str
    parse: Callable[[Any], list[Alert]]
    title: str
    # A top-level body field that may carry the ingest token, for senders that cannot set headers
    # (PagerDuty integrations authenticate with `routing_key` in the body).
    token_field: str | None = None

    @property
    def folder(self) -> Path:
        return Path(__file__).parent / self.name


SOURCES: tuple[Source, ...] = (
    Source("alertmanager", parse_alertmanager, "Prometheus Alertmanager"),
    Source("grafana", parse_grafana, "Grafana unified alerting"),
    Source("sensu", parse_sensu, "Sensu Go event"),
    Source("zabbix", parse_zabbix, "Zabbix webhook media type"),
    Source("pagerduty", parse_pagerduty, "PagerDuty Events API v2", token_field="routing_key"),  # noqa: S106 (a field name)
    Source("generic", parse_generic, "TeleOps generic alert"),
)

_BY_NAME = {source.name: source for source in SOURCES}


def get_source(name: str) -> Source | None:
    """The registered source called `name`, or None."""
    return _BY_NAME.get(name)
