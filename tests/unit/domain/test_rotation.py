"""Who is on call: pure rotation maths, with property tests over instants, zones and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teleops.domain.rotation import Override, Rotation, RotationError, parse_handoff

DAY = 86400
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def weekly(**kwargs: object) -> Rotation:
    values: dict[str, object] = {
        "name": "primary",
        "members": ["alice", "bob", "carol"],
        "shift_seconds": 7 * DAY,
        "handoff": "Mon 09:00",
        "tz": "UTC",
    }
    values.update(kwargs)
    return Rotation(**values)  # type: ignore[arg-type]


def test_weekly_rotation_hands_off_on_monday_morning() -> None:
    rotation = weekly(start=date(2026, 11, 2))  # a Monday
    assert rotation.on_call(datetime(2026, 11, 2, 9, 0, tzinfo=UTC)) == "alice"
    assert rotation.on_call(datetime(2026, 11, 9, 8, 59, tzinfo=UTC)) == "alice"
    assert rotation.on_call(datetime(2026, 11, 9, 9, 0, tzinfo=UTC)) == "bob"
    assert rotation.on_call(datetime(2026, 11, 16, 9, 0, tzinfo=UTC)) == "carol"
    assert rotation.on_call(datetime(2026, 11, 23, 9, 0, tzinfo=UTC)) == "alice"
    assert rotation.on_call(datetime(2026, 11, 2, 8, 59, tzinfo=UTC)) == "carol"  # the week before


def test_next_handoff_names_the_time_and_the_person() -> None:
    rotation = weekly(start=date(2026, 11, 2))
    when, who = rotation.next_handoff(datetime(2026, 11, 4, 12, 0, tzinfo=UTC))
    assert (when, who) == (datetime(2026, 11, 9, 9, 0, tzinfo=UTC), "bob")


def test_daily_handoff_stays_at_local_nine_across_dst() -> None:
    rotation = Rotation("eu", ["alice", "bob"], DAY, handoff="09:00", tz="Europe/Berlin", start=date(2026, 3, 27))
    # Berlin springs forward on 2026-03-29 (02:00 -> 03:00).
    for day in (28, 29, 30):
        local_nine = datetime(2026, 3, day, 9, 0, tzinfo=BERLIN)
        shift = rotation.shift_at(local_nine)
        assert shift.start == local_nine
        assert shift.start.astimezone(BERLIN).hour == 9
    sunday = rotation.shift_at(datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN))
    assert sunday.end - sunday.start == timedelta(hours=24)
    saturday = rotation.shift_at(datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN))
    assert saturday.end - saturday.start == timedelta(hours=23)  # the night the clock skipped an hour


def test_a_handoff_inside_the_skipped_hour_happens_when_the_clock_jumps() -> None:
    rotation = Rotation("night", ["alice", "bob"], DAY, handoff="02:30", tz="Europe/Berlin", start=date(2026, 3, 1))
    shift = rotation.shift_at(datetime(2026, 3, 29, 4, 0, tzinfo=BERLIN))
    assert shift.start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the moment of the jump


def test_twelve_hour_shifts_alternate_day_and_night() -> None:
    rotation = Rotation("split", ["day", "night"], 12 * 3600, handoff="08:00", tz="UTC", start=date(2026, 1, 1))
    assert rotation.on_call(datetime(2026, 1, 1, 8, 0, tzinfo=UTC)) == "day"
    assert rotation.on_call(datetime(2026, 1, 1, 19, 59, tzinfo=UTC)) == "day"
    assert rotation.on_call(datetime(2026, 1, 1, 20, 0, tzinfo=UTC)) == "night"
    assert rotation.on_call(datetime(2026, 1, 2, 7, 59, tzinfo=UTC)) == "night"
    assert rotation.on_call(datetime(2026, 1, 2, 8, 0, tzinfo=UTC)) == "day"


def test_an_override_covers_part_of_a_shift() -> None:
    cover = Override("dave", datetime(2026, 11, 10, 18, 0, tzinfo=UTC), datetime(2026, 11, 11, 0, 0, tzinfo=UTC))
    rotation = weekly(start=date(2026, 11, 2), overrides=(cover,))
    assert rotation.on_call(datetime(2026, 11, 10, 17, 59, tzinfo=UTC)) == "bob"
    assert rotation.on_call(datetime(2026, 11, 10, 18, 0, tzinfo=UTC)) == "dave"
    assert rotation.shift_at(datetime(2026, 11, 10, 20, 0, tzinfo=UTC)).overridden
    assert rotation.on_call(datetime(2026, 11, 11, 0, 0, tzinfo=UTC)) == "bob"
    assert rotation.next_handoff(datetime(2026, 11, 10, 12, 0, tzinfo=UTC)) == (cover.start, "dave")
    assert rotation.next_handoff(datetime(2026, 11, 10, 19, 0, tzinfo=UTC)) == (cover.end, "bob")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": []}, "at least one member"),
        ({"shift_seconds": 7 * 3600}, "divide a day evenly"),
        ({"shift_seconds": DAY}, "needs a shift of whole weeks"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"handoff": "Someday 09:00"}, "unknown weekday"),
        ({"handoff": "25:00"}, "no such time"),
        ({"handoff": "nine"}, "write it like"),
    ],
)
def test_rotations_that_cannot_work_are_refused_with_the_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(RotationError, match=message):
        weekly(**kwargs)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        weekly().on_call(datetime(2026, 1, 1))


def test_parse_handoff() -> None:
    assert parse_handoff("Mon 09:00") == (0, parse_handoff("09:00")[1])
    assert parse_handoff("sunday 23:30")[0] == 6


ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
SHIFTS = st.sampled_from([3600, 2 * 3600, 8 * 3600, 12 * 3600, DAY, 2 * DAY, 7 * DAY, 14 * DAY])
INSTANTS = st.datetimes(min_value=datetime(2024, 1, 2), max_value=datetime(2030, 12, 30), timezones=st.just(UTC))
HANDOFF_TIMES = st.sampled_from(["00:00", "02:30", "09:00", "17:45", "23:59"])


@st.composite
def rotations(draw: st.DrawFn) -> Rotation:
    shift = draw(SHIFTS)
    handoff = draw(HANDOFF_TIMES)
    if shift % (7 * DAY) == 0 and draw(st.booleans()):
        handoff = draw(st.sampled_from(["Mon", "Wed", "Sun"])) + " " + handoff
    members = draw(st.lists(st.sampled_from(["alice", "bob", "carol", "dave"]), min_size=1, max_size=4, unique=True))
    return Rotation("r", members, shift, handoff=handoff, tz=draw(ZONES))


@settings(max_examples=300, deadline=None)
@given(rotations(), INSTANTS)
def test_exactly_one_person_whose_shift_contains_the_instant(rotation: Rotation, at: datetime) -> None:
    shift = rotation.shift_at(at)
    assert shift.user in rotation.members
    assert shift.start <= at < shift.end
    assert rotation.on_call(at) == shift.user


@settings(max_examples=200, deadline=None)
@given(rotations(), INSTANTS)
def test_shifts_are_contiguous_and_go_round_the_members_in_order(rotation: Rotation, at: datetime) -> None:
    shift = rotation.shift_at(at)
    following = rotation.shift_at(shift.end)
    assert following.start == shift.end  # no gap, no overlap
    members = list(rotation.members)
    assert following.user == members[(members.index(shift.user) + 1) % len(members)]


@settings(max_examples=200, deadline=None)
@given(rotations(), INSTANTS)
def test_handoffs_land_on_the_local_handoff_time(rotation: Rotation, at: datetime) -> None:
    shift = rotation.shift_at(at)
    local = shift.start.astimezone(ZoneInfo(rotation.tz))
    wanted = rotation.handoff.split()[-1]
    hour, minute = (int(x) for x in wanted.split(":"))
    offset_minutes = (local.hour * 60 + local.minute - hour * 60 - minute) % (24 * 60)
    # Either exactly on the handoff grid, or moved by a DST gap (at most one hour, Lord Howe: 30 min).
    assert offset_minutes % (rotation.shift_seconds // 60 if rotation.shift_seconds < DAY else 24 * 60) == 0 or (
        local.dst() != (shift.start - timedelta(hours=2)).astimezone(ZoneInfo(rotation.tz)).dst()
    )


@settings(max_examples=100, deadline=None)
@given(rotations(), INSTANTS)
def test_next_handoff_is_the_end_of_the_current_shift_when_people_change(rotation: Rotation, at: datetime) -> None:
    when, who = rotation.next_handoff(at)
    assert when > at
    assert rotation.on_call(when) == who
    if len(rotation.members) > 1:
        assert when == rotation.shift_at(at).end
        assert who != rotation.on_call(at)
