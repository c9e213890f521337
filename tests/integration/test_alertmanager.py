"""The real Prometheus Alertmanager delivering to a real `teleops serve` over loopback.

Alerts are posted to Alertmanager's /api/v2/alerts as Prometheus would; Alertmanager groups them and
calls its webhook receiver, which points at TeleOps with an ingest token.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.servers import AlertmanagerServer, TeleopsServer, wait_until

DELIVERY_TIMEOUT = 30.0

StartTeleops = Callable[..., TeleopsServer]
StartAlertmanager = Callable[..., AlertmanagerServer]


def webhook(server: TeleopsServer) -> str:
    return f"{server.url}/api/v1/alerts/alertmanager"


def prometheus_alert(name: str, instance: str, starts_at: datetime, ends_at: datetime | None = None) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API."""
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "instance": instance, "job": "node", "severity": "critical"},
        "annotations": {"summary": f"{name} on {instance}", "description": "Disk / is 97% full"},
        "startsAt": starts_at.isoformat(),
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return alert


def unique_name() -> str:
    return f"DiskFull{secrets.token_hex(3)}"


def timeline_kinds(server: TeleopsServer, incident_id: int) -> list[str]:
    return [event["kind"] for event in server.incident(incident_id)["timeline"]]


def test_alerts_arrive_as_incidents_and_resolving_resolves_them(
    teleops_server: StartTeleops, alertmanager_server: StartAlertmanager
) -> None:
    teleops = teleops_server()
    am = alertmanager_server(webhook(teleops), teleops.ingest_token)
    name, started = unique_name(), datetime.now(UTC) - timedelta(minutes=1)
    am.post_alerts([prometheus_alert(name, "web-1:9100", started), prometheus_alert(name, "web-2:9100", started)])

    wait_until(lambda: len(teleops.incidents(status="open")) == 2, what="two incidents", timeout=DELIVERY_TIMEOUT)
    incidents = sorted(teleops.incidents(status="open"), key=lambda i: i["host"])
    assert [i["host"] for i in incidents] == ["web-1", "web-2"], "host is `instance` without its port"
    for incident in incidents:
        assert incident["source"] == "alertmanager"
        assert incident["name"] == name
        assert incident["severity"] == "critical"
        assert incident["summary"] == f"{name} on {incident['labels']['instance']}"
        assert incident["url"] == "http://prometheus.example:9090/graph?g0.expr=up"
        assert timeline_kinds(teleops, incident["id"]) == ["alert.fired"]

    # Prometheus resolves an alert by sending it again with endsAt in the past.
    ended = datetime.now(UTC) - timedelta(seconds=1)
    am.post_alerts([prometheus_alert(name, "web-1:9100", started, ended)])
    wait_until(lambda: len(teleops.incidents(status="resolved")) == 1, what="one resolved", timeout=DELIVERY_TIMEOUT)
    [resolved] = teleops.incidents(status="resolved")
    assert resolved["host"] == "web-1"
    assert resolved["resolved_by"] == "source:alertmanager"
    assert timeline_kinds(teleops, resolved["id"]) == ["alert.fired", "alert.resolved"]
    assert [i["host"] for i in teleops.incidents(status="open")] == ["web-2"]


def test_a_503_makes_alertmanager_retry_and_the_alert_lands_once(
    teleops_server: StartTeleops, alertmanager_server: StartAlertmanager
) -> None:
    # A short busy timeout: while another process holds the SQLite write lock, TeleOps answers 503 fast.
    teleops = teleops_server(env={"TELEOPS_DATABASE__BUSY_TIMEOUT_MS": "200"})
    am = alertmanager_server(webhook(teleops), teleops.ingest_token)
    holder = sqlite3.connect(teleops.sqlite_path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        am.post_alerts([prometheus_alert(unique_name(), "db-1:9100", datetime.now(UTC))])
        wait_until(
            lambda: teleops.metric("teleops_alerts_rejected_total", source="alertmanager", code="503") >= 2,
            what="TeleOps refusing Alertmanager twice (a first try and a retry)",
            timeout=DELIVERY_TIMEOUT,
        )
        # Alertmanager saw those failed requests itself (it counts each attempt of a notification).
        assert am.metric("alertmanager_notification_requests_failed_total", integration="webhook") >= 2
        assert teleops.incidents() == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    wait_until(lambda: len(teleops.incidents()) == 1, what="the retried alert", timeout=DELIVERY_TIMEOUT)
    [incident] = teleops.incidents()
    assert incident["host"] == "db-1"
    assert timeline_kinds(teleops, incident["id"]) == ["alert.fired"]
    assert teleops.metric("teleops_alerts_received_total", source="alertmanager", status="firing") >= 1


def test_an_ha_pair_delivering_the_same_alert_makes_one_incident(
    teleops_server: StartTeleops, alertmanager_server: StartAlertmanager
) -> None:
    """Two Alertmanagers (an HA pair, as Prometheus is told to send to both) each deliver every alert."""
    teleops = teleops_server()
    pair = [alertmanager_server(webhook(teleops), teleops.ingest_token) for _ in range(2)]
    name, started = unique_name(), datetime.now(UTC) - timedelta(minutes=1)
    for am in pair:
        am.post_alerts([prometheus_alert(name, "cache-1:9100", started)])

    def firing_deliveries() -> float:
        return teleops.metric("teleops_alerts_received_total", source="alertmanager", status="firing")

    wait_until(lambda: firing_deliveries() >= 2, what="both peers delivering", timeout=DELIVERY_TIMEOUT)
    [incident] = teleops.incidents()
    assert incident["count"] >= 2  # both deliveries counted on the one incident
    assert timeline_kinds(teleops, incident["id"]) == ["alert.fired"]

    ended = datetime.now(UTC) - timedelta(seconds=1)
    for am in pair:
        am.post_alerts([prometheus_alert(name, "cache-1:9100", started, ended)])

    def resolved_deliveries() -> float:
        return teleops.metric("teleops_alerts_received_total", source="alertmanager", status="resolved")

    wait_until(lambda: resolved_deliveries() >= 2, what="both peers resolving", timeout=DELIVERY_TIMEOUT)
    [incident] = teleops.incidents()
    assert incident["status"] == "resolved"
    assert timeline_kinds(teleops, incident["id"]) == ["alert.fired", "alert.resolved"]
