from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from teleops.domain.alert import AlertStatus, Severity
from teleops.sources.payload import PayloadError
from teleops.sources.registry import get_source
from teleops.sources.zabbix.parse import parse_zabbix

from .fixture_bodies import fixture_body


def test_problem_then_recovery_share_the_trigger_and_host_fingerprint() -> None:
    (problem,) = parse_zabbix(fixture_body("zabbix", "problem"))
    (recovery,) = parse_zabbix(fixture_body("zabbix", "recovery"))
    assert problem.fingerprint == recovery.fingerprint == "23117/web-1"
    assert (problem.status, recovery.status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)
    assert problem.ends_at is None
    assert recovery.ends_at is not None
    assert recovery.ends_at.timestamp() == 1795599672


@pytest.mark.parametrize(
    ("nseverity", "name", "severity"),
    [
        ("5", "Disaster", Severity.CRITICAL),
        ("4", "High", Severity.ERROR),
        ("3", "Average", Severity.ERROR),
        ("2", "Warning", Severity.WARNING),
        ("1", "Information", Severity.INFO),
        ("0", "Not classified", Severity.UNKNOWN),
        ("{EVENT.NSEVERITY}", "Disaster", Severity.CRITICAL),  # unresolved number: the name decides
        ("4", "Renamed by admin", Severity.ERROR),  # the number wins over a renamed severity
    ],
)
def test_severity_prefers_the_number(nseverity: str, name: str, severity: Severity) -> None:
    body = fixture_body("zabbix", "problem")
    body.update(event_nseverity=nseverity, event_severity=name)
    assert parse_zabbix(body)[0].severity is severity


def test_tags_become_labels_from_json_list_json_text_or_plain_text() -> None:
    as_list = parse_zabbix(fixture_body("zabbix", "problem"))[0].labels
    body = fixture_body("zabbix", "problem")
    body["event_tags"] = json.dumps(body["event_tags"])
    as_json_text = parse_zabbix(body)[0].labels
    body["event_tags"] = "class:os, component:storage, filesystem:/, scope:availability, scope:capacity"
    as_text = parse_zabbix(body)[0].labels
    assert as_list == as_json_text == as_text
    assert as_list["scope"] == "availability, capacity"


def test_unresolved_macros_count_as_absent() -> None:
    body = fixture_body("zabbix", "problem_tags_as_text")
    body.update(event_tags="{EVENT.TAGS}", host_ip="{HOST.IP}", event_date="{EVENT.DATE}", url="{$ZABBIX.URL}")
    (alert,) = parse_zabbix(body)
    assert alert.labels == {}
    assert "host_ip" not in alert.annotations
    assert alert.starts_at is None
    assert alert.url is None


def test_dates_without_timestamp_are_read_as_utc() -> None:
    (alert,) = parse_zabbix(fixture_body("zabbix", "problem_tags_as_text"))
    assert alert.starts_at is not None
    assert alert.starts_at.isoformat() == "2026-11-25T10:17:05+00:00"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda b: b.update(event_value="2"), "event_value"),
        (lambda b: b.pop("event_value"), "event_value"),
        (lambda b: b.update(trigger_id="{TRIGGER.ID}"), "trigger_id"),
        (lambda b: b.update(host_name=""), "host_name"),
        (lambda b: b.update(host_name="h" * 256), "host_name"),
        (lambda b: b.update(event_name=["x"]), "event_name"),
        (lambda b: b.update(event_timestamp="", event_date="25.11.2026"), "event_date"),
        (lambda b: b.update(event_tags="[not json"), "event_tags"),
        (lambda b: b.update(event_tags="[" * 5000 + "]" * 5000), "event_tags"),
        (lambda b: b.update(event_tags={"tag": "a"}), "event_tags"),
        (lambda b: b.update(event_tags=[{"value": "x"}]), "event_tags[0].tag"),
        (lambda b: b.update(event_tags=["class:os"]), "event_tags[0]"),
    ],
)
def test_bad_field_is_named_by_its_path(change: object, path: str) -> None:
    body = fixture_body("zabbix", "problem")
    change(body)  # type: ignore[operator]
    with pytest.raises(PayloadError) as caught:
        parse_zabbix(body)
    assert caught.value.path == path


# --- The shipped media type's script, run under Node.js with a stand-in for Zabbix's HttpRequest ---

_HARNESS = """
var sent = [];
function HttpRequest() { this.headers = []; }
HttpRequest.prototype.addHeader = function (h) { this.headers.push(h); };
HttpRequest.prototype.setProxy = function (p) { this.proxy = p; };
HttpRequest.prototype.post = function (url, data) { sent.push({url: url, headers: this.headers, body: data}); return '{}'; };
HttpRequest.prototype.getStatus = function () { return STATUS; };
var Zabbix = { log: function (level, message) {} };
var outcome;
try {
    outcome = {result: (function (value) {
SCRIPT
    })(process.argv[process.argv.length - 1])};
} catch (error) {
    outcome = {error: String(error)};
}
outcome.sent = sent;
console.log(JSON.stringify(outcome));
"""


def _media_type() -> dict[str, Any]:
    spec = get_source("zabbix")
    assert spec is not None
    export = yaml.safe_load((spec.folder / "teleops_mediatype.yaml").read_text(encoding="utf-8"))
    (media_type,) = export["zabbix_export"]["media_types"]
    return dict(media_type)


def _macro_values(**overrides: str) -> dict[str, str]:
    """The parameters as Zabbix hands them to the script: the export's defaults with macros resolved."""
    resolved = {
        "{EVENT.DATE}": "2026.11.25",
        "{EVENT.TIME}": "09:03:47",
        "{EVENT.ID}": "48213",
        "{EVENT.NAME}": "Disk space is critically low (used > 95%)",
        "{EVENT.NSEVERITY}": "4",
        "{EVENT.SEVERITY}": "High",
        "{EVENT.OPDATA}": "Space used: 97.1% of 29.8 GB",
        "{EVENT.SOURCE}": "0",
        "{EVENT.TAGSJSON}": '[{"tag":"scope","value":"capacity"}]',
        "{EVENT.UPDATE.STATUS}": "0",
        "{EVENT.VALUE}": "1",
        "{HOST.IP}": "10.0.0.11",
        "{HOST.HOST}": "web-1",
        "{TRIGGER.DESCRIPTION}": "",
        "{TRIGGER.ID}": "23117",
        "{$ZABBIX.URL}": "https://zabbix.example.org/",
    }
    params = {p["name"]: resolved.get(p["value"], p["value"]) for p in _media_type()["parameters"]}
    params.update(teleops_token="secret-ingest-token")
    params.update(overrides)
    return params


def _run_script(params: dict[str, str], status: int = 200) -> dict[str, Any]:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node is not None, "the Zabbix media type test needs Node.js (Debian package nodejs)"
    program = _HARNESS.replace("SCRIPT", _media_type()["script"]).replace("STATUS", str(status))
    run = subprocess.run(
        [node, "-e", program, "--", json.dumps(params)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "TZ": "UTC"},
        check=True,
    )
    return dict(json.loads(run.stdout))


def test_media_type_export_declares_every_parameter_the_readme_lists() -> None:
    names = {p["name"] for p in _media_type()["parameters"]}
    readme = (Path(__file__).parents[3] / "src/teleops/sources/zabbix/README.md").read_text(encoding="utf-8")
    for name in ("event_id", "event_value", "event_name", "event_severity", "host_name", "host_ip", "trigger_id"):
        assert name in names
        assert f"`{name}`" in readme
    assert _media_type()["type"] == "WEBHOOK"


def test_media_type_script_posts_a_problem_teleops_parses() -> None:
    outcome = _run_script(_macro_values())
    assert outcome["result"] == "OK"
    (request,) = outcome["sent"]
    assert request["url"] == "http://teleops.example.internal:8080/api/v1/alerts/zabbix"
    assert "Authorization: Bearer secret-ingest-token" in request["headers"]
    body = json.loads(request["body"])
    assert "event_recovery_date" not in body  # an unresolved macro is left out
    (alert,) = parse_zabbix(body)
    assert alert.status is AlertStatus.FIRING
    assert alert.fingerprint == "23117/web-1"
    assert alert.labels == {"scope": "capacity"}
    assert alert.starts_at is not None
    assert alert.starts_at.isoformat() == "2026-11-25T09:03:47+00:00"
    assert alert.url == "https://zabbix.example.org/tr_events.php?triggerid=23117&eventid=48213"


def test_media_type_script_posts_a_recovery_with_its_time() -> None:
    params = _macro_values(event_value="0", event_recovery_date="2026.11.25", event_recovery_time="09:41:12")
    (request,) = _run_script(params)["sent"]
    (alert,) = parse_zabbix(json.loads(request["body"]))
    assert alert.status is AlertStatus.RESOLVED
    assert alert.ends_at is not None
    assert alert.ends_at.isoformat() == "2026-11-25T09:41:12+00:00"


def test_media_type_script_fails_loudly_on_an_error_answer_and_skips_updates() -> None:
    failed = _run_script(_macro_values(), status=401)
    assert "TeleOps answered HTTP 401" in failed["error"]
    skipped = _run_script(_macro_values(event_update_status="1"))
    assert skipped["sent"] == []
    assert skipped["result"].startswith("OK")
    unset = _run_script(_macro_values(teleops_token="<PLACE INGEST TOKEN>"))
    assert "teleops token create ingest" in unset["error"]
    assert unset["sent"] == []
