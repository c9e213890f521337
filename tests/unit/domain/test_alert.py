from __future__ import annotations

import pytest

from teleops.domain.alert import Severity, host_from_labels


@pytest.mark.parametrize(
    ("labels", "host"),
    [
        ({"instance": "web-1.example.internal:9100"}, "web-1.example.internal"),
        ({"instance": "10.0.0.5:9100"}, "10.0.0.5"),
        ({"instance": "[2001:db8::1]:9100"}, "2001:db8::1"),
        ({"instance": "2001:db8::1"}, "2001:db8::1"),
        ({"instance": "web-1"}, "web-1"),
        ({"host": "db-2", "instance": "x:1"}, "db-2"),
        ({"hostname": "db-3"}, "db-3"),
        ({"teleops_host": "web-1", "instance": "web-1.example.internal:9100"}, "web-1"),
        ({"instance": "  "}, None),
        ({"job": "node"}, None),
        ({}, None),
    ],
)
def test_host_comes_from_the_most_specific_label_without_port(labels: dict[str, str], host: str | None) -> None:
    assert host_from_labels(labels) == host


@pytest.mark.parametrize(
    ("text", "severity"),
    [
        ("critical", Severity.CRITICAL),
        ("CRITICAL", Severity.CRITICAL),
        ("Disaster", Severity.CRITICAL),
        ("high", Severity.ERROR),
        ("warning", Severity.WARNING),
        ("warn", Severity.WARNING),
        ("info", Severity.INFO),
        ("page-me-now", Severity.UNKNOWN),
        ("", Severity.UNKNOWN),
        (None, Severity.UNKNOWN),
    ],
)
def test_severity_words_map_onto_five_levels(text: str | None, severity: Severity) -> None:
    assert Severity.from_text(text) is severity
