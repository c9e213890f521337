from __future__ import annotations

import pytest

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.alertmanager.parse import parse_alertmanager
from teleops.sources.payload import PayloadError

from .fixture_bodies import fixture_body


def test_grouped_webhook_gives_one_alert_per_entry_with_its_own_fingerprint() -> None:
    alerts = parse_alertmanager(fixture_body("alertmanager", "grouped_two_alerts"))
    assert [a.fingerprint for a in alerts] == ["539056902e26562c", "c8980f2af2cfd52b"]
    assert {a.host for a in alerts} == {"api-1"}


def test_resolved_alert_keeps_its_end_time_and_firing_has_none() -> None:
    (firing,) = parse_alertmanager(fixture_body("alertmanager", "firing"))
    (resolved,) = parse_alertmanager(fixture_body("alertmanager", "resolved"))
    assert firing.status is AlertStatus.FIRING
    assert firing.ends_at is None
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.ends_at is not None
    assert resolved.fingerprint == firing.fingerprint
    assert firing.severity is Severity.CRITICAL


def test_missing_fingerprint_is_derived_from_labels_regardless_of_their_order() -> None:
    body = fixture_body("alertmanager", "firing")
    del body["alerts"][0]["fingerprint"]
    first = parse_alertmanager(body)[0].fingerprint
    body["alerts"][0]["labels"] = dict(reversed(list(body["alerts"][0]["labels"].items())))
    assert parse_alertmanager(body)[0].fingerprint == first
    body["alerts"][0]["labels"]["job"] = "other"
    assert parse_alertmanager(body)[0].fingerprint != first


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda b: b["alerts"][0]["labels"].pop("alertname"), "alerts[0].labels.alertname"),
        (lambda b: b["alerts"][0]["labels"].update(teleops_host="x" * 300), "alerts[0].labels"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda b: b["alerts"][0].update(fingerprint="f" * 256), "alerts[0].fingerprint"),
    ],
)
def test_bad_field_is_named_by_its_path(change: object, path: str) -> None:
    body = fixture_body("alertmanager", "firing")
    change(body)  # type: ignore[operator]
    with pytest.raises(PayloadError) as caught:
        parse_alertmanager(body)
    assert caught.value.path == path
