"""Whatever JSON arrives, a parser returns storable alerts or raises PayloadError — never anything else.

Three layers: a reviewed corpus of bad bodies per source that must be refused with PayloadError;
every field of every real fixture replaced by each kind of wrong value; and Hypothesis, with
arbitrary JSON and with fixtures whose subtrees are replaced by arbitrary JSON.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teleops.domain.alert import Alert
from teleops.sources.payload import PayloadError
from teleops.sources.registry import SOURCES, Source, get_source

from .fixture_bodies import fixture_body

HUGE = "x" * 300_000  # under the 1 MiB body cap, over every identifier column

# Bodies no source accepts: the top level must be an object (one for PagerDuty, a batch object elsewhere).
NOT_AN_OBJECT: list[Any] = [None, [], [{}], "alerts", 0, 1.5, True]

# source -> (name of a valid fixture, [(change, why)]) where every change must give PayloadError.
Change = Any
CORPUS: dict[str, list[tuple[str, Any]]] = {
    "alertmanager": [
        ("no alerts", {"version": "4"}),
        ("alerts is an object", {"version": "4", "alerts": {"status": "firing"}}),
        ("alerts entry is a string", {"version": "4", "alerts": ["firing"]}),
        ("status missing", {"alerts": [{"labels": {"alertname": "A"}}]}),
        ("status empty", {"alerts": [{"status": "", "labels": {"alertname": "A"}}]}),
        ("labels is a list", {"alerts": [{"status": "firing", "labels": [["alertname", "A"]]}]}),
        ("label value is an object", {"alerts": [{"status": "firing", "labels": {"alertname": {"v": 1}}}]}),
        ("alertname empty", {"alerts": [{"status": "firing", "labels": {"alertname": " "}}]}),
        ("alertname huge", {"alerts": [{"status": "firing", "labels": {"alertname": HUGE}}]}),
        ("fingerprint huge", {"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": HUGE}]}),
        ("NUL in a label", {"alerts": [{"status": "firing", "labels": {"alertname": "A", "job": "a\u0000b"}}]}),
        ("lone surrogate", {"alerts": [{"status": "firing", "labels": {"alertname": "A\ud800"}}]}),
        (
            "startsAt a number of years",
            {"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": 1e300}]},
        ),
        (
            "startsAt past year 9999",
            {"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "9999-12-31T23:00:00-05:00"}]},
        ),
        ("startsAt in odd digits", {"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "²³"}]}),
        ("version 3", {"version": "3", "alerts": []}),
    ],
    "grafana": [
        ("no orgId", {"alerts": []}),
        ("orgId as text", {"orgId": "1", "alerts": []}),
        ("orgId a boolean", {"orgId": True, "alerts": []}),
        ("no alerts", {"orgId": 1}),
        ("no fingerprint", {"orgId": 1, "alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}),
        (
            "fingerprint empty",
            {"orgId": 1, "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": ""}]},
        ),
        (
            "fingerprint huge",
            {"orgId": 1, "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": HUGE}]},
        ),
        (
            "values a list",
            {
                "orgId": 1,
                "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": "f", "values": [1]}],
            },
        ),
        (
            "panelURL an object",
            {
                "orgId": 1,
                "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "fingerprint": "f", "panelURL": {}}],
            },
        ),
        ("legacy alert", {"ruleName": "CPU", "state": "alerting", "evalMatches": []}),
    ],
    "sensu": [
        ("check a list", {"check": []}),
        ("check without entity", {"check": {"status": 2, "metadata": {"name": "c"}}}),
        ("entity a string", {"entity": "web-1", "check": {"status": 2, "metadata": {"name": "c"}}}),
        ("entity without metadata", {"entity": {}, "check": {"status": 2, "metadata": {"name": "c"}}}),
        ("check without metadata", {"entity": {"metadata": {"name": "e"}}, "check": {"status": 2}}),
        ("check without status", {"entity": {"metadata": {"name": "e"}}, "check": {"metadata": {"name": "c"}}}),
        (
            "status as text",
            {"entity": {"metadata": {"name": "e"}}, "check": {"status": "2", "metadata": {"name": "c"}}},
        ),
        (
            "status negative",
            {"entity": {"metadata": {"name": "e"}}, "check": {"status": -2, "metadata": {"name": "c"}}},
        ),
        (
            "entity name huge",
            {"entity": {"metadata": {"name": HUGE}}, "check": {"status": 2, "metadata": {"name": "c"}}},
        ),
        ("check name empty", {"entity": {"metadata": {"name": "e"}}, "check": {"status": 2, "metadata": {"name": ""}}}),
        (
            "labels a list",
            {"entity": {"metadata": {"name": "e", "labels": []}}, "check": {"status": 2, "metadata": {"name": "c"}}},
        ),
        (
            "output a list",
            {"entity": {"metadata": {"name": "e"}}, "check": {"status": 2, "output": [], "metadata": {"name": "c"}}},
        ),
    ],
    "zabbix": [
        ("empty object", {}),
        ("event_value 2", {"event_value": "2", "trigger_id": "1", "host_name": "h", "event_name": "n"}),
        ("event_value a list", {"event_value": ["1"], "trigger_id": "1", "host_name": "h", "event_name": "n"}),
        ("no trigger_id", {"event_value": "1", "host_name": "h", "event_name": "n"}),
        (
            "host_name unresolved",
            {"event_value": "1", "trigger_id": "1", "host_name": "{HOST.HOST}", "event_name": "n"},
        ),
        ("host_name huge", {"event_value": "1", "trigger_id": "1", "host_name": HUGE, "event_name": "n"}),
        ("event_name huge", {"event_value": "1", "trigger_id": "1", "host_name": "h", "event_name": HUGE}),
        (
            "tags deeply nested text",
            {"event_value": "1", "trigger_id": "1", "host_name": "h", "event_name": "n", "event_tags": "[" * 100_000},
        ),
        (
            "tags a number",
            {"event_value": "1", "trigger_id": "1", "host_name": "h", "event_name": "n", "event_tags": 5},
        ),
        (
            "timestamp out of range",
            {"event_value": "1", "trigger_id": "1", "host_name": "h", "event_name": "n", "event_timestamp": "9" * 40},
        ),
        (
            "date malformed",
            {"event_value": "1", "trigger_id": "1", "host_name": "h", "event_name": "n", "event_date": "2026-11-25"},
        ),
    ],
    "pagerduty": [
        ("empty object", {}),
        ("no event_action", {"routing_key": "r"}),
        ("trigger without payload", {"routing_key": "r", "event_action": "trigger"}),
        ("payload a string", {"routing_key": "r", "event_action": "trigger", "payload": "DISK at 99%"}),
        (
            "severity unknown",
            {
                "routing_key": "r",
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "fatal"},
            },
        ),
        (
            "source huge",
            {
                "routing_key": "r",
                "event_action": "trigger",
                "payload": {"summary": "s", "source": HUGE, "severity": "info"},
            },
        ),
        ("resolve without dedup_key", {"routing_key": "r", "event_action": "resolve"}),
        ("dedup_key a number list", {"routing_key": "r", "event_action": "resolve", "dedup_key": [1]}),
        (
            "links an object",
            {
                "routing_key": "r",
                "event_action": "trigger",
                "links": {},
                "payload": {"summary": "s", "source": "h", "severity": "info"},
            },
        ),
        (
            "images without src",
            {
                "routing_key": "r",
                "event_action": "trigger",
                "images": [{}],
                "payload": {"summary": "s", "source": "h", "severity": "info"},
            },
        ),
    ],
    "generic": [
        ("empty object", {}),
        ("summary empty", {"summary": ""}),
        ("summary a list", {"summary": ["disk full"]}),
        ("status unknown", {"summary": "s", "status": "critical"}),
        ("host huge", {"summary": "s", "host": HUGE}),
        ("check huge", {"summary": "s", "check": HUGE}),
        ("dedup_key huge", {"summary": "s", "dedup_key": HUGE}),
        ("labels a string", {"summary": "s", "labels": "team=ops"}),
        ("label key with NUL", {"summary": "s", "labels": {"a\u0000": "b"}}),
        ("batch of strings", {"alerts": ["disk full"]}),
        ("batch and single", {"summary": "s", "alerts": []}),
    ],
}

# A valid fixture per source, for the mutation and Hypothesis layers.
BASE_FIXTURE = {
    "alertmanager": "firing",
    "grafana": "firing_two_alerts",
    "sensu": "disk_critical",
    "zabbix": "problem",
    "pagerduty": "trigger",
    "generic": "full",
}

WRONG_VALUES: list[Any] = [None, [], {}, 0, -1, 2.5, True, "", " ", HUGE, "a\u0000b", "\udfff", [HUGE], {"k": HUGE}]


def _assert_storable(alerts: Any, source: Source) -> None:
    """What the store needs of every alert: our type, short identifiers, text without NUL or surrogates."""
    assert isinstance(alerts, list)
    for alert in alerts:
        assert isinstance(alert, Alert)
        assert alert.source == source.name
        assert 0 < len(alert.fingerprint) <= 255
        assert 0 < len(alert.name) <= 255
        assert alert.host is None or 0 < len(alert.host) <= 255
        text = json.dumps(alert.to_json(), ensure_ascii=False)
        assert "\u0000" not in text
        text.encode("utf-8")  # raises on a lone surrogate


def _parse_safely(source: Source, body: Any) -> None:
    try:
        alerts = source.parse(body)
    except PayloadError as exc:
        refusal = exc
    else:
        _assert_storable(alerts, source)
        return
    assert refusal.path
    assert refusal.message


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
@pytest.mark.parametrize("body", NOT_AN_OBJECT, ids=repr)
def test_a_body_that_is_not_an_object_is_refused(source: Source, body: Any) -> None:
    with pytest.raises(PayloadError):
        source.parse(body)


CORPUS_CASES = [pytest.param(name, body, id=f"{name}: {why}") for name, cases in CORPUS.items() for why, body in cases]


@pytest.mark.parametrize(("source_name", "body"), CORPUS_CASES)
def test_bad_body_is_refused_with_payload_error(source_name: str, body: Any) -> None:
    source = get_source(source_name)
    assert source is not None
    with pytest.raises(PayloadError):
        source.parse(body)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(body)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
def test_every_field_of_a_real_fixture_replaced_by_a_wrong_value_is_alerts_or_payload_error(source: Source) -> None:
    base = fixture_body(source.name, BASE_FIXTURE[source.name])
    tried = 0
    for path in _paths(base):
        for wrong in WRONG_VALUES:
            _parse_safely(source, _replaced(base, path, wrong))
            tried += 1
    assert tried > 50  # the walk reached the fields


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
@FUZZ
@given(body=JSON)
def test_arbitrary_json_gives_alerts_or_payload_error(source: Source, body: Any) -> None:
    _parse_safely(source, body)


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.name)
@FUZZ
@given(data=st.data())
def test_a_real_fixture_with_one_subtree_replaced_by_arbitrary_json_gives_alerts_or_payload_error(
    source: Source, data: st.DataObject
) -> None:
    base = fixture_body(source.name, BASE_FIXTURE[source.name])
    path = data.draw(st.sampled_from(list(_paths(base))))
    _parse_safely(source, _replaced(base, path, data.draw(JSON)))
