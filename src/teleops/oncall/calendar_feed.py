"""On-call shifts as an iCalendar (RFC 5545) feed: one VEVENT per shift or override, times in UTC.

Written here rather than with a library because it is small: escaping (RFC 5545 §3.3.11), folding at 75 octets
without splitting a UTF-8 character (§3.1), CRLF line ends, and a UID per shift that stays the same from one fetch to
the next (rotation, person and start), so a calendar app updates events instead of duplicating them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from teleops.domain.rotation import Rotation
from teleops.domain.rotation_schedule import coverage

__all__ = ["CalendarEvent", "calendar_text", "escape_text", "fold_line", "person_events", "rotation_events"]

_PRODID = "-//TeleOps//On call//EN"


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    uid: str
    start: datetime
    end: datetime
    summary: str
    description: str = ""


def escape_text(value: str) -> str:
    """A TEXT value: backslash, semicolon and comma escaped, line breaks as `\\n` (RFC 5545 §3.3.11)."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def fold_line(line: str) -> str:
    """`line` folded into lines of at most 75 octets, continuation lines starting with a space (RFC 5545 §3.1).

    Folds between characters, never inside a UTF-8 sequence. The result has no trailing CRLF."""
    parts: list[str] = []
    current = ""
    size = 0
    limit = 75
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            parts.append(current)
            current, size, limit = "", 0, 74  # continuation lines lose one octet to the leading space
        current += char
        size += width
    parts.append(current)
    return "\r\n ".join(parts)


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def calendar_text(name: str, events: Iterable[CalendarEvent], *, now: datetime) -> str:
    """The whole VCALENDAR, CRLF line ends, folded. `now` is every event's DTSTAMP (when the feed was made)."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{_PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(name)}",
    ]
    for event in events:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{escape_text(event.uid)}",
            f"DTSTAMP:{_utc(now)}",
            f"DTSTART:{_utc(event.start)}",
            f"DTEND:{_utc(event.end)}",
            f"SUMMARY:{escape_text(event.summary)}",
        ]
        if event.description:
            lines.append(f"DESCRIPTION:{escape_text(event.description)}")
        lines += ["TRANSP:TRANSPARENT", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(fold_line(line) + "\r\n" for line in lines)


def _event(rotation: str, user: str, start: datetime, end: datetime, overridden: bool) -> CalendarEvent:
    kind = "override" if overridden else "shift"
    summary = f"On call: {user} ({rotation}{', override' if overridden else ''})"
    description = f"{user} is on call for rotation {rotation} ({kind}), from TeleOps."
    return CalendarEvent(f"{kind}-{rotation}-{user}-{_utc(start)}@teleops", start, end, summary, description)


def rotation_events(rotation: Rotation, start: datetime, end: datetime) -> list[CalendarEvent]:
    """Every shift and override of `rotation` that covers [`start`, `end`)."""
    return [
        _event(rotation.name, shift.user, shift.start, shift.end, shift.overridden)
        for shift in coverage(rotation, start, end)
    ]


def person_events(rotations: Mapping[str, Rotation], user: str, start: datetime, end: datetime) -> list[CalendarEvent]:
    """The shifts and overrides `user` covers in any rotation over [`start`, `end`), in time order."""
    events = [
        _event(rotation.name, shift.user, shift.start, shift.end, shift.overridden)
        for rotation in rotations.values()
        for shift in coverage(rotation, start, end)
        if shift.user == user
    ]
    return sorted(events, key=lambda e: (e.start, e.uid))
