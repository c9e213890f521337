from __future__ import annotations

import pytest

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.generic.parse import parse_generic
from teleops.sources.payload import PayloadError

from .fixture_bodies import fixture_body


def test_the_first_start_curl_body_makes_a_critical_alert_on_localhost() -> None:
    (alert,) = parse_generic(
        {"summary": "Disk / is 97% full", "host": "localhost", "check": "DiskFull", "severity": "critical"}
    )
    assert (alert.name, alert.host, alert.severity, alert.status) == (
        "DiskFull",
        "localhost",
        Severity.CRITICAL,
        AlertStatus.FIRING,
    )
    assert alert.fingerprint == "localhost/DiskFull"
    assert alert.summary == "Disk / is 97% full"


def test_only_summary_is_required_and_defaults_fill_the_rest() -> None:
    (alert,) = parse_generic({"summary": "something broke"})
    assert (alert.name, alert.fingerprint, alert.host, alert.status, alert.severity) == (
        "generic",
        "generic",
        None,
        AlertStatus.FIRING,
        Severity.UNKNOWN,
    )


def test_resolved_with_the_same_host_and_check_resolves_the_same_fingerprint() -> None:
    (firing,) = parse_generic({"summary": "down", "host": "web-1", "check": "HTTP"})
    (resolved,) = parse_generic({"summary": "up again", "host": "web-1", "check": "HTTP", "status": "RESOLVED"})
    assert firing.fingerprint == resolved.fingerprint
    assert resolved.status is AlertStatus.RESOLVED


def test_dedup_key_overrides_the_default_fingerprint() -> None:
    (alert,) = parse_generic(fixture_body("generic", "full"))
    assert alert.fingerprint == "backup/db-1/nightly"
    assert alert.labels == {"team": "dba", "job": "backup-nightly"}
    assert alert.url == "https://ci.example.org/jobs/backup-nightly/1187"


def test_host_falls_back_to_labels() -> None:
    (alert,) = parse_generic({"summary": "x", "labels": {"instance": "web-3:9100"}})
    assert alert.host == "web-3"


def test_batch_gives_one_alert_per_entry() -> None:
    alerts = parse_generic(fixture_body("generic", "batch"))
    assert [a.name for a in alerts] == ["BackupFailed", "CertExpiry", "generic"]
    assert alerts[1].labels["days_left"] == "6"
    assert parse_generic({"alerts": []}) == []


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "summary"),
        ({"summary": ""}, "summary"),
        ({"summary": 42}, "summary"),
        ({"summary": "x", "status": "open"}, "status"),
        ({"summary": "x", "host": ["web-1"]}, "host"),
        ({"summary": "x", "check": "c" * 256}, "check"),
        ({"summary": "x", "labels": ["a"]}, "labels"),
        ({"summary": "x", "labels": {"a": {"b": 1}}}, "labels.a"),
        ({"summary": "x", "alerts": []}, "alerts"),
        ({"alerts": {"summary": "x"}}, "alerts"),
        ({"alerts": [{"summary": "ok"}, "x"]}, "alerts[1]"),
        ({"alerts": [{"summary": "ok"}, {"check": "c"}]}, "alerts[1].summary"),
        ({"summary": "x", "dedup_key": "k\u0000"}, "dedup_key"),
    ],
)
def test_bad_field_is_named_by_its_path(body: object, path: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_generic(body)
    assert caught.value.path == path
