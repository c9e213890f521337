from __future__ import annotations

import json

import pytest

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.grafana.parse import parse_grafana
from teleops.sources.payload import PayloadError

from .fixture_bodies import fixture_body


def test_links_and_values_are_kept_as_annotation_text() -> None:
    memory, cpu = parse_grafana(fixture_body("grafana", "firing_two_alerts"))
    assert memory.annotations["silenceURL"].startswith("https://grafana.example.org/alerting/silence/new")
    assert memory.annotations["panelURL"] == "https://grafana.example.org/d/rYdddlPWk?orgId=1&viewPanel=78"
    assert json.loads(memory.annotations["values"]) == {"B": 93.23943737541908, "C": 1}
    assert "panelURL" not in cpu.annotations  # empty links are left out


def test_url_prefers_the_panel_then_the_dashboard_then_the_rule() -> None:
    memory, cpu = parse_grafana(fixture_body("grafana", "firing_two_alerts"))
    assert memory.url == "https://grafana.example.org/d/rYdddlPWk?orgId=1&viewPanel=78"
    assert cpu.url == "https://grafana.example.org/alerting/grafana/1afz29v7z/view?orgId=1"


def test_host_severity_and_fingerprint_come_from_the_alert() -> None:
    memory, cpu = parse_grafana(fixture_body("grafana", "firing_two_alerts"))
    assert (memory.host, memory.severity, memory.fingerprint) == (
        "web-2.example.internal",
        Severity.WARNING,
        "c6eadffa33fcdf37",
    )
    assert (cpu.host, cpu.severity) == ("db-1", Severity.CRITICAL)


def test_resolved_alert_has_the_same_fingerprint_and_an_end() -> None:
    (resolved,) = parse_grafana(fixture_body("grafana", "resolved"))
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.fingerprint == "c6eadffa33fcdf37"
    assert resolved.ends_at is not None
    assert resolved.starts_at is not None
    assert "values" not in resolved.annotations  # "values": null


def test_an_annotation_the_rule_defines_wins_over_grafanas_field() -> None:
    body = fixture_body("grafana", "firing_two_alerts")
    body["alerts"][0]["annotations"]["values"] = "see the panel"
    assert parse_grafana(body)[0].annotations["values"] == "see the panel"


def test_alertmanager_body_is_refused_with_a_pointer_to_the_right_source() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_grafana(fixture_body("alertmanager", "firing"))
    assert caught.value.path == "orgId"
    assert "/api/v1/alerts/alertmanager" in caught.value.message


def test_legacy_dashboard_alert_is_refused_naming_unified_alerting() -> None:
    legacy = {"ruleId": 1, "ruleName": "CPU", "state": "alerting", "evalMatches": [], "title": "[Alerting] CPU"}
    with pytest.raises(PayloadError, match="legacy Grafana dashboard alert") as caught:
        parse_grafana(legacy)
    assert caught.value.path == "orgId"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.update(orgId="1"), "orgId"),
        (lambda b: b["alerts"][1].pop("fingerprint"), "alerts[1].fingerprint"),
        (lambda b: b["alerts"][0].update(values=[1, 2]), "alerts[0].values"),
        (lambda b: b["alerts"][0].update(silenceURL={"a": 1}), "alerts[0].silenceURL"),
        (lambda b: b["alerts"][0]["labels"].update(alertname=""), "alerts[0].labels.alertname"),
        (lambda b: b["alerts"][0]["annotations"].update(summary=["x"]), "alerts[0].annotations.summary"),
    ],
)
def test_bad_field_is_named_by_its_path(change: object, path: str) -> None:
    body = fixture_body("grafana", "firing_two_alerts")
    change(body)  # type: ignore[operator]
    with pytest.raises(PayloadError) as caught:
        parse_grafana(body)
    assert caught.value.path == path
