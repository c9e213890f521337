"""Prometheus metrics (`teleops_*`), one registry per app so tests can run many apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
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
