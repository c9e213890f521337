"""PagerDuty Events API v2 (`POST /v2/enqueue` bodies), so any tool that can page PagerDuty can page TeleOps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.sources.fingerprint import digest_fingerprint
from teleops.sources.payload import (
    MAX_NAME_LENGTH,
    MAX_SUMMARY_LENGTH,
    PayloadError,
    at,
    clip,
    opt_list,
    opt_object,
    opt_str,
    opt_time,
    req_object,
    req_str,
)

__all__ = ["parse_pagerduty"]

_SOURCE = "pagerduty"
_STATUS_OF_ACTION = {
    "trigger": AlertStatus.FIRING,
    "acknowledge": AlertStatus.ACKNOWLEDGED,
    "resolve": AlertStatus.RESOLVED,
}
_SEVERITIES = {
    "critical": Severity.CRITICAL,
    "error": Severity.ERROR,
    "warning": Severity.WARNING,
    "info": Severity.INFO,
}
_LABEL_FIELDS = ("component", "group", "class")


def parse_pagerduty(body: Any) -> list[Alert]:
    """One `Alert` per body (PagerDuty takes one event per request; a list is refused).

    `event_action` trigger → firing, acknowledge → acknowledged, resolve → resolved. `dedup_key`
    is the fingerprint; acknowledge and resolve require it, a trigger without one gets a digest of
    its payload's source, component, group, class and summary. Raises PayloadError naming the field.
    """
    if isinstance(body, list):
        raise PayloadError("", "expected one event object; PagerDuty Events v2 takes one event per request")
    root = req_object(body, "")
    req_str(root, "routing_key", "")  # PagerDuty refuses events without it; TeleOps authenticates by token
    action = req_str(root, "event_action", "")
    status = _STATUS_OF_ACTION.get(action)
    if status is None:
        raise PayloadError("event_action", f"expected 'trigger', 'acknowledge' or 'resolve', got {action[:20]!r}")
    dedup_key = opt_str(root, "dedup_key", "", max_length=MAX_NAME_LENGTH).strip()
    if status is AlertStatus.FIRING:
        return [_trigger(root, dedup_key)]
    if not dedup_key:
        raise PayloadError("dedup_key", f"is required for event_action {action!r}: it names the alert to {action}")
    opt_object(root, "payload", "")  # PagerDuty ignores a payload here; it must still be an object
    return [Alert(source=_SOURCE, fingerprint=dedup_key, status=status, name=dedup_key)]


def _trigger(root: Mapping[str, Any], dedup_key: str) -> Alert:
    payload = req_object(root.get("payload"), "payload")
    summary = req_str(payload, "summary", "payload")
    source = req_str(payload, "source", "payload", max_length=MAX_NAME_LENGTH).strip()
    severity_text = req_str(payload, "severity", "payload")
    severity = _SEVERITIES.get(severity_text)
    if severity is None:
        raise PayloadError(
            "payload.severity", f"expected 'critical', 'error', 'warning' or 'info', got {severity_text[:20]!r}"
        )
    labels = {key: value for key in _LABEL_FIELDS if (value := opt_str(payload, key, "payload").strip())}
    fingerprint = dedup_key or digest_fingerprint(
        source, labels.get("component", ""), labels.get("group", ""), labels.get("class", ""), summary
    )
    name = labels.get("class") or labels.get("component") or summary.strip()
    annotations: dict[str, str] = {}
    details = payload.get("custom_details")
    if details is not None:
        # Any JSON value is allowed; kept as compact, ASCII-escaped JSON text.
        annotations["custom_details"] = json.dumps(details, sort_keys=True, separators=(",", ":"))
    links = _links(root)
    images = _images(root)
    if links:
        annotations["links"] = json.dumps(links, separators=(",", ":"))
    if images:
        annotations["images"] = json.dumps(images, separators=(",", ":"))
    for key in ("client", "client_url"):
        if value := opt_str(root, key, ""):
            annotations[key] = value
    return Alert(
        source=_SOURCE,
        fingerprint=fingerprint,
        status=AlertStatus.FIRING,
        name=clip(name, MAX_NAME_LENGTH),
        severity=severity,
        host=source,
        summary=clip(summary.strip(), MAX_SUMMARY_LENGTH),
        labels=labels,
        annotations=annotations,
        starts_at=opt_time(payload, "timestamp", "payload"),
        url=(links[0]["href"] if links else None) or opt_str(root, "client_url", "") or None,
    )


def _links(root: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for index, item in enumerate(opt_list(root, "links", "")):
        path = at("links", index)
        link = req_object(item, path)
        out.append({"href": req_str(link, "href", path), "text": opt_str(link, "text", path)})
    return out


def _images(root: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for index, item in enumerate(opt_list(root, "images", "")):
        path = at("images", index)
        image = req_object(item, path)
        entry = {"src": req_str(image, "src", path)}
        for key in ("href", "alt"):
            if value := opt_str(image, key, path):
                entry[key] = value
        out.append(entry)
    return out
