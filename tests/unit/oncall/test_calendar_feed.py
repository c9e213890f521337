"""The iCal writer (oncall/calendar_feed.py): RFC 5545 escaping, folding, structure, stable UIDs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from teleops.domain.rotation import Override, Rotation
from teleops.oncall.calendar_feed import (
    CalendarEvent,
    calendar_text,
    escape_text,
    fold_line,
    person_events,
    rotation_events,
)

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday
DAILY = Rotation("primary", ("alice", "bob"), 86400, handoff="09:00")


def unfold(text: str) -> list[str]:
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line.startswith(" "):
            lines[-1] += line[1:]
        else:
            lines.append(line)
    return lines


def test_text_values_escape_backslash_semicolon_comma_and_newlines() -> None:
    assert escape_text("a\\b;c,d\ne\r\nf") == "a\\\\b\\;c\\,d\\ne\\nf"


def test_long_lines_fold_at_75_octets_without_splitting_a_utf8_character() -> None:
    line = "SUMMARY:" + "é" * 100  # 2 octets each
    folded = fold_line(line)
    parts = folded.split("\r\n")
    assert len(parts) > 1
    assert all(len(part.encode()) <= 75 for part in parts)
    assert all(part.startswith(" ") for part in parts[1:])
    assert "".join([parts[0], *(p[1:] for p in parts[1:])]) == line
    assert fold_line("SHORT:x") == "SHORT:x"


def test_a_calendar_has_crlf_lines_one_vevent_per_event_and_utc_times() -> None:
    event = CalendarEvent("u1@teleops", NOW, NOW + timedelta(hours=2), "On call: a, b; c", "line one\nline two")
    text = calendar_text("On call: primary", [event], now=NOW)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    lines = unfold(text.removesuffix("\r\n"))
    assert lines[:2] == ["BEGIN:VCALENDAR", "VERSION:2.0"]
    assert lines[-1] == "END:VCALENDAR"
    assert lines.count("BEGIN:VEVENT") == 1
    assert lines.count("END:VEVENT") == 1
    assert "DTSTART:20260304T120000Z" in lines
    assert "DTEND:20260304T140000Z" in lines
    assert "DTSTAMP:20260304T120000Z" in lines
    assert "UID:u1@teleops" in lines
    assert "SUMMARY:On call: a\\, b\\; c" in lines
    assert "DESCRIPTION:line one\\nline two" in lines


def test_rotation_events_are_whole_shifts_with_uids_that_do_not_change_between_fetches() -> None:
    events = rotation_events(DAILY, NOW, NOW + timedelta(days=3))
    assert [e.summary for e in events] == [f"On call: {u} (primary)" for u in ("bob", "alice", "bob", "alice")]
    assert events[0].start == datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # the shift under way, from its real start
    later = rotation_events(DAILY, NOW + timedelta(hours=1), NOW + timedelta(days=3))
    assert [e.uid for e in later] == [e.uid for e in events]
    assert len({e.uid for e in events}) == len(events)


def test_an_override_is_its_own_event_and_cuts_the_shift_it_covers() -> None:
    cover = Override("carol", datetime(2026, 3, 4, 13, 0, tzinfo=UTC), datetime(2026, 3, 4, 15, 0, tzinfo=UTC))
    rotation = Rotation("primary", ("alice", "bob"), 86400, handoff="09:00", overrides=(cover,))
    events = rotation_events(rotation, NOW, NOW + timedelta(hours=6))
    assert [(e.summary, e.start.hour, e.end.hour) for e in events] == [
        ("On call: bob (primary)", 9, 13),
        ("On call: carol (primary, override)", 13, 15),
        ("On call: bob (primary)", 15, 9),
    ]
    assert events[1].uid.startswith("override-primary-carol-")


def test_a_person_feed_has_only_their_shifts_across_rotations() -> None:
    other = Rotation("db", ("carol", "alice"), 7 * 86400, handoff="Mon 09:00")
    events = person_events({"primary": DAILY, "db": other}, "alice", NOW, NOW + timedelta(days=14))
    assert events
    assert all(e.summary.startswith("On call: alice (") for e in events)
    assert {e.summary for e in events} == {"On call: alice (primary)", "On call: alice (db)"}
    assert [e.start for e in events] == sorted(e.start for e in events)
