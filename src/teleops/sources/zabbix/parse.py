"""Zabbix events as TeleOps' webhook media type (`teleops_mediatype.yaml`) posts them.

Every field is a string, as Zabbix hands macro values to webhook scripts; a macro Zabbix could not
resolve arrives as its own name (`{EVENT.RECOVERY.DATE}`) and counts as absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from teleops.domain.alert import Alert, AlertStatus, Severity
from teleops.sources.fingerprint import joined_fingerprint
from teleops.sources.payload import (
    MAX_DESCRIPTION_LENGTH,
    MAX_SUMMARY_LENGTH,
    PayloadError,
    at,
    bounded_name,
    clip,
    opt_str,
    opt_time,
    req_object,
)

__all__ = ["parse_zabbix"]

_SOURCE = "zabbix"
_UNRESOLVED_MACRO = re.compile(r"\{[A-Z0-9_.$]+\}")
# {EVENT.NSEVERITY}: 0 Not classified, 1 Information, 2 Warning, 3 Average, 4 High, 5 Disaster.
_SEVERITY_OF_NSEVERITY = {
    "0": Severity.UNKNOWN,
    "1": Severity.INFO,
    "2": Severity.WARNING,
    "3": Severity.ERROR,
    "4": Severity.ERROR,
    "5": Severity.CRITICAL,
}
_ANNOTATION_FIELDS = ("event_id", "host_ip", "event_opdata", "event_severity")


def parse_zabbix(body: Any) -> list[Alert]:
    """One `Alert` per Zabbix problem or recovery message.

    Firing when `event_value` is "1", resolved when "0". The fingerprint is `trigger_id/host_name`,
    so a problem that comes back after recovery is a new incident linked to the last one. Raises
    PayloadError naming the bad field.
    """
    root = req_object(body, "")
    event_value = _required(root, "event_value")
    if event_value not in ("0", "1"):
        raise PayloadError("event_value", f"expected '1' (problem) or '0' (recovery), got {event_value[:20]!r}")
    trigger_id = _required(root, "trigger_id")
    host_name = bounded_name(_required(root, "host_name"), "host_name")
    event_name = _required(root, "event_name")
    resolved = event_value == "0"
    annotations = {key: value for key in _ANNOTATION_FIELDS if (value := _field(root, key))}
    return [
        Alert(
            source=_SOURCE,
            fingerprint=joined_fingerprint(trigger_id, host_name),
            status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
            name=bounded_name(event_name, "event_name"),
            severity=_severity(root),
            host=host_name,
            summary=clip(event_name, MAX_SUMMARY_LENGTH),
            description=clip(_field(root, "trigger_description"), MAX_DESCRIPTION_LENGTH),
            labels=_tags(root),
            annotations=annotations,
            starts_at=_when(root, "event_timestamp", "event_date", "event_time"),
            ends_at=_when(root, "recovery_timestamp", "event_recovery_date", "event_recovery_time")
            if resolved
            else None,
            url=_field(root, "url") or None,
        )
    ]


def _field(root: Mapping[str, Any], key: str) -> str:
    """The field's text, trimmed; "" when absent, empty or an unresolved macro."""
    value = opt_str(root, key, "").strip()
    return "" if _UNRESOLVED_MACRO.fullmatch(value) else value


def _required(root: Mapping[str, Any], key: str) -> str:
    value = _field(root, key)
    if not value:
        raise PayloadError(key, "is missing or empty; check the parameter in the TeleOps media type")
    return value


def _severity(root: Mapping[str, Any]) -> Severity:
    by_number = _SEVERITY_OF_NSEVERITY.get(_field(root, "event_nseverity"))
    return by_number if by_number is not None else Severity.from_text(_field(root, "event_severity"))


def _when(root: Mapping[str, Any], timestamp_key: str, date_key: str, time_key: str) -> datetime | None:
    """Unix seconds when the media type computed them; else {EVENT.DATE} {EVENT.TIME}, read as UTC."""
    if _field(root, timestamp_key):
        return opt_time(root, timestamp_key, "")
    date, time = _field(root, date_key), _field(root, time_key)
    if not date:
        return None
    try:
        return datetime.strptime(f"{date} {time or '00:00:00'}", "%Y.%m.%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise PayloadError(
            date_key, f"expected Zabbix's yyyy.mm.dd and hh:mm:ss, got {date[:12]!r} {time[:12]!r}"
        ) from exc


def _tags(root: Mapping[str, Any]) -> dict[str, str]:
    """Event tags as labels: {EVENT.TAGSJSON} (a list, or that list as text) or {EVENT.TAGS} ("a:b, c:d")."""
    value = root.get("event_tags")
    if value is None:
        return {}
    if isinstance(value, str):
        text = opt_str(root, "event_tags", "").strip()
        if not text or _UNRESOLVED_MACRO.fullmatch(text):
            return {}
        if not text.startswith("["):
            return _tags_from_text(text)
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise PayloadError("event_tags", "is neither {EVENT.TAGSJSON} nor 'tag:value, …' text") from exc
    if not isinstance(value, list):
        raise PayloadError("event_tags", "expected a list of {tag, value} objects or 'tag:value, …' text")
    labels: dict[str, str] = {}
    for index, item in enumerate(value):
        path = at("event_tags", index)
        tag_object = req_object(item, path)
        tag = opt_str(tag_object, "tag", path).strip()
        if not tag:
            raise PayloadError(at(path, "tag"), "every Zabbix tag has a name")
        _add_tag(labels, tag, opt_str(tag_object, "value", path).strip())
    return labels


def _tags_from_text(text: str) -> dict[str, str]:
    # {EVENT.TAGS} is "tag:value, tag2:value2"; a tag without a value has no colon.
    labels: dict[str, str] = {}
    for part in text.split(","):
        tag, _, tag_value = part.partition(":")
        if tag.strip():
            _add_tag(labels, tag.strip(), tag_value.strip())
    return labels


def _add_tag(labels: dict[str, str], tag: str, value: str) -> None:
    """Zabbix allows one tag name several times (service:web, service:db); labels keep them all, comma-joined."""
    labels[tag] = f"{labels[tag]}, {value}" if tag in labels else value
