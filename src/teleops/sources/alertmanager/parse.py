"""Prometheus Alertmanager webhook, payload version 4."""

from __future__ import annotations

from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity, host_from_labels
from teleops.sources.fingerprint import labels_fingerprint
from teleops.sources.payload import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SUMMARY_LENGTH,
    PayloadError,
    at,
    bounded_name,
    clip,
    opt_mapping_of_str,
    opt_str,
    opt_time,
    req_list,
    req_object,
    req_str,
)

__all__ = ["parse_alertmanager"]

_SOURCE = "alertmanager"


def parse_alertmanager(body: Any) -> list[Alert]:
    """One `Alert` per entry of `alerts`; raises PayloadError naming the bad field."""
    root = req_object(body, "")
    version = opt_str(root, "version", "")
    if version and version != "4":
        raise PayloadError("version", f"webhook payload version {version[:20]!r} is not supported (expected '4')")
    external_url = opt_str(root, "externalURL", "") or None
    alerts = []
    for index, item in enumerate(req_list(root, "alerts", "")):
        path = at("alerts", index)
        entry = req_object(item, path)
        labels = opt_mapping_of_str(entry, "labels", path)
        annotations = opt_mapping_of_str(entry, "annotations", path)
        status_text = req_str(entry, "status", path)
        if status_text not in ("firing", "resolved"):
            raise PayloadError(at(path, "status"), f"expected 'firing' or 'resolved', got {status_text[:20]!r}")
        name_path = at(at(path, "labels"), "alertname")
        name = labels.get("alertname", "")
        if not name.strip():
            raise PayloadError(name_path, "every Alertmanager alert has an alertname")
        host = host_from_labels(labels)
        fingerprint = opt_str(entry, "fingerprint", path, max_length=MAX_NAME_LENGTH) or labels_fingerprint(labels)
        alerts.append(
            Alert(
                source=_SOURCE,
                fingerprint=fingerprint,
                status=AlertStatus(status_text),
                name=bounded_name(name, name_path),
                severity=Severity.from_text(labels.get("severity")),
                host=bounded_name(host, at(path, "labels")) if host else None,
                summary=clip(annotations.get("summary", "") or annotations.get("message", ""), MAX_SUMMARY_LENGTH),
                description=clip(annotations.get("description", ""), MAX_DESCRIPTION_LENGTH),
                labels=labels,
                annotations=annotations,
                starts_at=opt_time(entry, "startsAt", path),
                ends_at=opt_time(entry, "endsAt", path) if status_text == "resolved" else None,
                url=opt_str(entry, "generatorURL", path) or external_url,
            )
        )
    return alerts
