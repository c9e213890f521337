"""Prometheus metrics (`teleops_*`), one registry per app so tests can run many apps in one process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from teleops.domain.alert import Alert

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        # Labelled children cached by label values: `.labels()` validates and locks on every call, which
        # showed in the ingest profile at thousands of requests per second.
        self._children: dict[tuple[Any, ...], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.alerts_received = Counter(
            "teleops_alerts_received",
            "Alerts received and committed, by source and alert status.",
            ["source", "status"],
            registry=self.registry,
        )
        self.alerts_rejected = Counter(
            "teleops_alerts_rejected",
            "Alert requests refused, by source and HTTP status.",
            ["source", "code"],
            registry=self.registry,
        )
        self.incidents_open = Gauge("teleops_incidents_open", "Incidents not yet resolved.", registry=self.registry)
        self.request_latency = Histogram(
            "teleops_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.render_fallback = Counter(
            "teleops_render_fallback",
            "Chat messages resent as plain text because the platform rejected their markup, by platform.",
            ["platform"],
            registry=self.registry,
        )
        self.agent_messages_rejected = Counter(
            "teleops_agent_messages_rejected",
            "Reports an agent sent about a command that was not sent to it (started, output, exit, refused), "
            "refused by the controller, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def count_received(self, source: str, alerts: Sequence[Alert]) -> None:
        """Add committed alerts to `teleops_alerts_received_total`, one increment per (source, status)."""
        by_status: dict[str, int] = {}
        for alert in alerts:
            status = alert.status.value
            by_status[status] = by_status.get(status, 0) + 1
        for status, count in by_status.items():
            self._child(self.alerts_received, source, status).inc(count)

    def observe_latency(self, route: str, method: str, seconds: float) -> None:
        """One request's latency under its route template (never a raw path: paths may carry ids or secrets)."""
        self._child(self.request_latency, route, method).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
