from __future__ import annotations

import json

import pytest

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.pagerduty.parse import parse_pagerduty
from teleops.sources.payload import PayloadError

from .fixture_bodies import fixture_body


@pytest.mark.parametrize(
    ("fixture", "status"),
    [("trigger", AlertStatus.FIRING), ("acknowledge", AlertStatus.ACKNOWLEDGED), ("resolve", AlertStatus.RESOLVED)],
)
def test_event_action_maps_to_status_on_the_dedup_key(fixture: str, status: AlertStatus) -> None:
    (alert,) = parse_pagerduty(fixture_body("pagerduty", fixture))
    assert alert.status is status
    assert alert.fingerprint == "srv01/mysql"


def test_trigger_takes_host_from_source_and_keeps_details_links_and_images() -> None:
    (alert,) = parse_pagerduty(fixture_body("pagerduty", "trigger"))
    assert alert.host == "prod-datapipe03.example.com"
    assert alert.severity is Severity.CRITICAL
    assert alert.name == "disk"
    assert json.loads(alert.annotations["custom_details"]) == {
        "free space": "1%",
        "ping time": "1500ms",
        "load avg": 0.75,
    }
    assert json.loads(alert.annotations["images"])[0]["alt"] == "Disk usage, last 24 hours"
    assert alert.url == "https://monitoring.example.com/hosts/prod-datapipe03"
    assert alert.starts_at is not None
    assert alert.starts_at.isoformat() == "2026-11-25T08:42:58.315000+00:00"


@pytest.mark.parametrize(
    ("text", "severity"),
    [
        ("critical", Severity.CRITICAL),
        ("error", Severity.ERROR),
        ("warning", Severity.WARNING),
        ("info", Severity.INFO),
    ],
)
def test_the_four_pagerduty_severities(text: str, severity: Severity) -> None:
    body = fixture_body("pagerduty", "trigger_without_dedup_key")
    body["payload"]["severity"] = text
    assert parse_pagerduty(body)[0].severity is severity


def test_trigger_without_dedup_key_gets_a_stable_derived_key() -> None:
    body = fixture_body("pagerduty", "trigger_without_dedup_key")
    first = parse_pagerduty(body)[0].fingerprint
    body["payload"]["timestamp"] = "2026-11-25T10:00:00Z"  # not part of the key
    body["payload"]["custom_details"] = {"n": 2}
    assert parse_pagerduty(body)[0].fingerprint == first
    body["payload"]["source"] = "host2.example.com"
    assert parse_pagerduty(body)[0].fingerprint != first
    assert len(first) == 16


def test_acknowledge_and_resolve_ignore_the_payload() -> None:
    body = fixture_body("pagerduty", "resolve")
    body["payload"] = {"summary": 5}
    (alert,) = parse_pagerduty(body)
    assert alert.status is AlertStatus.RESOLVED


def test_a_list_of_events_is_refused() -> None:
    with pytest.raises(PayloadError, match="one event per request"):
        parse_pagerduty([fixture_body("pagerduty", "trigger")])


@pytest.mark.parametrize(
    ("fixture", "change", "path"),
    [
        ("trigger", lambda b: b.pop("routing_key"), "routing_key"),
        ("trigger", lambda b: b.update(event_action="escalate"), "event_action"),
        ("trigger", lambda b: b["payload"].update(severity="CRITICAL"), "payload.severity"),
        ("trigger", lambda b: b["payload"].pop("source"), "payload.source"),
        ("trigger", lambda b: b["payload"].update(summary="  "), "payload.summary"),
        ("trigger", lambda b: b.pop("payload"), "payload"),
        ("trigger", lambda b: b.update(dedup_key="k" * 256), "dedup_key"),
        ("trigger", lambda b: b.update(links=[{"text": "no href"}]), "links[0].href"),
        ("trigger", lambda b: b.update(images={"src": "x"}), "images"),
        ("trigger", lambda b: b["payload"].update(timestamp="last tuesday"), "payload.timestamp"),
        ("resolve", lambda b: b.pop("dedup_key"), "dedup_key"),
        ("acknowledge", lambda b: b.update(dedup_key=""), "dedup_key"),
        ("acknowledge", lambda b: b.update(payload=[]), "payload"),
    ],
)
def test_bad_field_is_named_by_its_path(fixture: str, change: object, path: str) -> None:
    body = fixture_body("pagerduty", fixture)
    change(body)  # type: ignore[operator]
    with pytest.raises(PayloadError) as caught:
        parse_pagerduty(body)
    assert caught.value.path == path
