from __future__ import annotations

import pytest

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.payload import PayloadError
from teleops.sources.sensu.parse import parse_sensu

from .fixture_bodies import fixture_body


def test_metrics_only_event_gives_no_alert() -> None:
    assert parse_sensu(fixture_body("sensu", "metrics_only")) == []


@pytest.mark.parametrize(
    ("status", "alert_status", "severity"),
    [
        (0, AlertStatus.RESOLVED, Severity.INFO),
        (1, AlertStatus.FIRING, Severity.WARNING),
        (2, AlertStatus.FIRING, Severity.CRITICAL),
        (3, AlertStatus.FIRING, Severity.UNKNOWN),
        (127, AlertStatus.FIRING, Severity.UNKNOWN),
    ],
)
def test_check_status_maps_to_status_and_severity(status: int, alert_status: AlertStatus, severity: Severity) -> None:
    body = fixture_body("sensu", "disk_critical")
    body["check"]["status"] = status
    (alert,) = parse_sensu(body)
    assert (alert.status, alert.severity) == (alert_status, severity)


def test_recovery_resolves_the_same_fingerprint_with_its_execution_time() -> None:
    (firing,) = parse_sensu(fixture_body("sensu", "disk_critical"))
    (resolved,) = parse_sensu(fixture_body("sensu", "disk_resolved"))
    assert firing.fingerprint == resolved.fingerprint == "default/web-1/check-disk"
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ends_at is not None
    assert resolved.ends_at.timestamp() == 1795597487
    assert firing.ends_at is None


def test_repeated_runs_of_one_problem_keep_the_fingerprint_and_start() -> None:
    first = fixture_body("sensu", "disk_critical")
    later = fixture_body("sensu", "disk_critical")
    later["timestamp"] = later["check"]["executed"] = first["timestamp"] + 60
    later["check"]["occurrences"] = 2
    (a,) = parse_sensu(first)
    (b,) = parse_sensu(later)
    assert (a.fingerprint, a.starts_at, a.summary) == (b.fingerprint, b.starts_at, b.summary)


def test_proxy_entity_is_the_host() -> None:
    (alert,) = parse_sensu(fixture_body("sensu", "proxy_ping_warning"))
    assert alert.host == "switch-3"
    body = fixture_body("sensu", "disk_critical")
    body["check"]["proxy_entity_name"] = "router-7"
    assert parse_sensu(body)[0].host == "router-7"


def test_summary_is_the_first_output_line_without_performance_data() -> None:
    (alert,) = parse_sensu(fixture_body("sensu", "proxy_ping_warning"))
    assert alert.summary == "PING WARNING - Packet loss = 30%, RTA = 42.17 ms"
    (disk,) = parse_sensu(fixture_body("sensu", "disk_critical"))
    assert disk.summary == "check-disk-usage CRITICAL: / 97.12% used (28.9 GiB of 29.8 GiB)"
    assert disk.description.endswith("| / 97.12%")


def test_empty_output_gives_a_summary_that_names_the_check() -> None:
    body = fixture_body("sensu", "disk_critical")
    body["check"]["output"] = "   \n"
    assert parse_sensu(body)[0].summary == "check-disk exited with status 2"


def test_check_labels_override_entity_labels() -> None:
    body = fixture_body("sensu", "disk_critical")
    body["check"]["metadata"]["labels"]["role"] = "from-check"
    assert parse_sensu(body)[0].labels["role"] == "from-check"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.pop("entity"), "entity"),
        (lambda b: b["entity"].update(metadata=[]), "entity.metadata"),
        (lambda b: b["entity"]["metadata"].pop("name"), "entity.metadata.name"),
        (lambda b: b["check"]["metadata"].update(name=""), "check.metadata.name"),
        (lambda b: b["check"].update(status="2"), "check.status"),
        (lambda b: b["check"].update(status=True), "check.status"),
        (lambda b: b["check"].update(status=-1), "check.status"),
        (lambda b: b["check"].update(status=2.5), "check.status"),
        (lambda b: b["check"].update(output={"text": "x"}), "check.output"),
        (lambda b: b.update(check="check-disk"), "check"),
        (lambda b: b["check"].update(proxy_entity_name="p" * 256), "check.proxy_entity_name"),
    ],
)
def test_bad_field_is_named_by_its_path(change: object, path: str) -> None:
    body = fixture_body("sensu", "disk_critical")
    change(body)  # type: ignore[operator]
    with pytest.raises(PayloadError) as caught:
        parse_sensu(body)
    assert caught.value.path == path
