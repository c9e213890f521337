"""Sensu Go events, as a pipe handler receives them on stdin (`sensuctl event info … --format json`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.sources.fingerprint import joined_fingerprint
from teleops.sources.payload import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SUMMARY_LENGTH,
    PayloadError,
    clip,
    opt_mapping_of_str,
    opt_object,
    opt_str,
    opt_time,
    req_int,
    req_object,
    req_str,
)

__all__ = ["parse_sensu"]

_SOURCE = "sensu"

# Sensu's exit-code convention (Nagios): 0 OK, 1 warning, 2 critical, anything else unknown.
_SEVERITY_OF_STATUS = {0: Severity.INFO, 1: Severity.WARNING, 2: Severity.CRITICAL}


def parse_sensu(body: Any) -> list[Alert]:
    """The event's check result as one `Alert`, or `[]` for a metrics-only event (no `check`).

    Resolved when `check.status` is 0, firing otherwise. The host is `check.proxy_entity_name`
    when set (checks run on behalf of a device), else `entity.metadata.name`. Raises PayloadError
    naming the bad field.
    """
    root = req_object(body, "")
    check = opt_object(root, "check", "")
    if check is None:
        return []  # metrics-only events carry no check result: nothing to alert on
    entity = req_object(root.get("entity"), "entity")
    entity_meta = req_object(entity.get("metadata"), "entity.metadata")
    check_meta = req_object(check.get("metadata"), "check.metadata")
    entity_name = req_str(entity_meta, "name", "entity.metadata", max_length=MAX_NAME_LENGTH)
    check_name = req_str(check_meta, "name", "check.metadata", max_length=MAX_NAME_LENGTH)
    proxy = opt_str(check, "proxy_entity_name", "check", max_length=MAX_NAME_LENGTH).strip()
    namespace = (
        opt_str(check_meta, "namespace", "check.metadata")
        or opt_str(entity_meta, "namespace", "entity.metadata")
        or _event_namespace(root)
        or "default"
    )
    status = req_int(check, "status", "check")
    if status < 0:
        raise PayloadError("check.status", f"expected a check exit status (0 or more), got {status}")
    output = opt_str(check, "output", "check").strip()
    first_line = output.splitlines()[0].strip() if output else ""
    # Nagios-style plugins append performance data after "|": numbers that change every run.
    summary = first_line.split("|", 1)[0].strip() or first_line
    labels = {
        **opt_mapping_of_str(entity_meta, "labels", "entity.metadata"),
        **opt_mapping_of_str(check_meta, "labels", "check.metadata"),
    }
    annotations = {
        **opt_mapping_of_str(entity_meta, "annotations", "entity.metadata"),
        **opt_mapping_of_str(check_meta, "annotations", "check.metadata"),
    }
    command = opt_str(check, "command", "check")
    if command:
        annotations.setdefault("check_command", command)
    resolved = status == 0
    return [
        Alert(
            source=_SOURCE,
            # The entity the event is about (Sensu puts the proxy entity there for proxy checks).
            fingerprint=joined_fingerprint(namespace, entity_name, check_name),
            status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
            name=check_name,
            severity=_SEVERITY_OF_STATUS.get(status, Severity.UNKNOWN),
            host=proxy or entity_name,
            summary=clip(summary or f"{check_name} exited with status {status}", MAX_SUMMARY_LENGTH),
            description=clip(output if output != first_line else "", MAX_DESCRIPTION_LENGTH),
            labels=labels,
            annotations=annotations,
            # Sensu does not say when a problem began (`timestamp` is this run); the incident's
            # first sighting stands in for it, so repeats of one problem stay one occurrence.
            starts_at=None,
            ends_at=_ended_at(check, root) if resolved else None,
            url=None,
        )
    ]


def _event_namespace(root: Mapping[str, Any]) -> str:
    meta = opt_object(root, "metadata", "")
    return opt_str(meta, "namespace", "metadata") if meta is not None else ""


def _ended_at(check: Mapping[str, Any], root: Mapping[str, Any]) -> datetime | None:
    """When the OK result ran; Sensu writes 0 for "never", which is no time at all."""
    for obj, key, path in ((check, "executed", "check"), (root, "timestamp", "")):
        if obj.get(key) not in (0, "0"):
            when = opt_time(obj, key, path)
            if when is not None:
                return when
    return None
