"""TeleOps' own alert format, for scripts and cron jobs: one object, or `{"alerts": [...]}` for a batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity, host_from_labels
from teleops.sources.fingerprint import joined_fingerprint
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
    req_list,
    req_object,
    req_str,
)

__all__ = ["parse_generic"]

_SOURCE = "generic"
_DEFAULT_CHECK = "generic"
_STATUSES = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}


def parse_generic(body: Any) -> list[Alert]:
    """One `Alert` for an alert object, or one per entry of `{"alerts": [...]}`.

    Only `summary` is required. `check` defaults to "generic", `status` to "firing", `dedup_key` to
    `host/check` (or `check` without a host). Raises PayloadError naming the bad field.
    """
    root = req_object(body, "")
    if "alerts" not in root:
        return [_alert(root, "")]
    if "summary" in root:
        raise PayloadError("alerts", 'send one alert object or {"alerts": [...]}, not both in one body')
    alerts = []
    for index, item in enumerate(req_list(root, "alerts", "")):
        path = at("alerts", index)
        alerts.append(_alert(req_object(item, path), path))
    return alerts


def _alert(entry: Mapping[str, Any], path: str) -> Alert:
    summary = req_str(entry, "summary", path).strip()
    labels = opt_mapping_of_str(entry, "labels", path)
    host = opt_str(entry, "host", path, max_length=MAX_NAME_LENGTH).strip() or _host_of(labels, path)
    check = opt_str(entry, "check", path, max_length=MAX_NAME_LENGTH).strip() or _DEFAULT_CHECK
    status_text = opt_str(entry, "status", path).strip().lower() or "firing"
    status = _STATUSES.get(status_text)
    if status is None:
        raise PayloadError(at(path, "status"), f"expected 'firing' or 'resolved', got {status_text[:20]!r}")
    dedup_key = opt_str(entry, "dedup_key", path, max_length=MAX_NAME_LENGTH).strip()
    severity_text = opt_str(entry, "severity", path)
    return Alert(
        source=_SOURCE,
        fingerprint=dedup_key or (joined_fingerprint(host, check) if host else check),
        status=status,
        name=check,
        severity=Severity.from_text(severity_text),
        host=host,
        summary=clip(summary, MAX_SUMMARY_LENGTH),
        description=clip(opt_str(entry, "description", path), MAX_DESCRIPTION_LENGTH),
        labels=labels,
        url=opt_str(entry, "url", path).strip() or None,
    )


def _host_of(labels: Mapping[str, str], path: str) -> str | None:
    """Without `host`, the same labels as Alertmanager's name the host (`instance` without its port)."""
    host = host_from_labels(labels)
    return bounded_name(host, at(path, "labels")) if host else None
