"""Grafana unified alerting webhook (contact point type "webhook", Grafana 9 and later)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity, host_from_labels
from teleops.sources.payload import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SUMMARY_LENGTH,
    PayloadError,
    at,
    bounded_name,
    clip,
    opt_mapping_of_str,
    opt_object,
    opt_str,
    opt_time,
    req_list,
    req_object,
    req_str,
)

__all__ = ["parse_grafana"]

_SOURCE = "grafana"

# Grafana's own per-alert links, kept as annotations so the chat message can offer them.
_LINK_FIELDS = ("silenceURL", "dashboardURL", "panelURL", "imageURL")


def parse_grafana(body: Any) -> list[Alert]:
    """One `Alert` per entry of `alerts`.

    Raises PayloadError naming the bad field, including `orgId` when the body is not from Grafana's
    unified alerting (legacy dashboard alerts and plain Alertmanager bodies have none).
    """
    root = req_object(body, "")
    _require_unified_alerting(root)
    external_url = opt_str(root, "externalURL", "") or None
    alerts = []
    for index, item in enumerate(req_list(root, "alerts", "")):
        path = at("alerts", index)
        entry = req_object(item, path)
        alerts.append(_alert(entry, path, external_url))
    return alerts


def _require_unified_alerting(root: Mapping[str, Any]) -> None:
    org_id = root.get("orgId")
    if org_id is None:
        if "ruleName" in root or "evalMatches" in root:
            raise PayloadError(
                "orgId",
                "this is a legacy Grafana dashboard alert; TeleOps reads unified alerting webhooks "
                "(Grafana 9+): send it from an Alerting contact point of type webhook",
            )
        raise PayloadError(
            "orgId",
            "Grafana unified alerting always sends orgId; if this came from Alertmanager, "
            "post it to /api/v1/alerts/alertmanager instead",
        )
    if isinstance(org_id, bool) or not isinstance(org_id, int):
        raise PayloadError("orgId", "expected the Grafana organisation id as an integer")


def _alert(entry: Mapping[str, Any], path: str, external_url: str | None) -> Alert:
    labels = opt_mapping_of_str(entry, "labels", path)
    annotations = opt_mapping_of_str(entry, "annotations", path)
    status_text = req_str(entry, "status", path)
    if status_text not in ("firing", "resolved"):
        raise PayloadError(at(path, "status"), f"expected 'firing' or 'resolved', got {status_text[:20]!r}")
    name_path = at(at(path, "labels"), "alertname")
    name = labels.get("alertname", "")
    if not name.strip():
        raise PayloadError(name_path, "every Grafana alert has an alertname (the rule's title)")
    fingerprint = req_str(entry, "fingerprint", path, max_length=MAX_NAME_LENGTH)
    host = host_from_labels(labels)
    links = {key: opt_str(entry, key, path) for key in _LINK_FIELDS}
    extras = {key: value for key, value in links.items() if value}
    values = opt_object(entry, "values", path)
    if values is not None:
        # Compact JSON with escaped non-ASCII: storable text whatever the query results held.
        extras["values"] = json.dumps(values, sort_keys=True, separators=(",", ":"))
    value_string = opt_str(entry, "valueString", path)
    if value_string:
        extras["valueString"] = value_string
    # A rule's own annotation of the same name wins: it is what the rule's author wrote.
    merged = {**extras, **annotations}
    return Alert(
        source=_SOURCE,
        fingerprint=fingerprint,
        status=AlertStatus(status_text),
        name=bounded_name(name, name_path),
        severity=Severity.from_text(labels.get("severity")),
        host=bounded_name(host, at(path, "labels")) if host else None,
        summary=clip(annotations.get("summary", "") or annotations.get("message", ""), MAX_SUMMARY_LENGTH),
        description=clip(annotations.get("description", ""), MAX_DESCRIPTION_LENGTH),
        labels=labels,
        annotations=merged,
        starts_at=opt_time(entry, "startsAt", path),
        ends_at=opt_time(entry, "endsAt", path) if status_text == "resolved" else None,
        url=links["panelURL"] or links["dashboardURL"] or opt_str(entry, "generatorURL", path) or external_url,
    )
