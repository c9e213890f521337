"""coverage(): who covers a rotation over a window, cut at override edges, agreeing with shift_at everywhere."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from teleops.domain.rotation import Override, Rotation
from teleops.domain.rotation_schedule import coverage

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def test_a_window_inside_one_shift_is_that_whole_shift() -> None:
    rotation = Rotation("r", ("a", "b"), 86400, handoff="09:00")
    [shift] = coverage(rotation, START + timedelta(hours=10), START + timedelta(hours=11))
    assert (shift.user, shift.start, shift.end) == ("b", START + timedelta(hours=9), START + timedelta(hours=33))


def test_overrides_cut_shifts_and_every_instant_agrees_with_shift_at() -> None:
    first = Override("x", START + timedelta(hours=12), START + timedelta(hours=20))
    inner = Override("y", START + timedelta(hours=14), START + timedelta(hours=16))  # listed later: `first` wins
    rotation = Rotation("r", ("a", "b"), 8 * 3600, handoff="00:00", overrides=(first, inner))
    shifts = coverage(rotation, START, START + timedelta(days=1))
    for left, right in itertools.pairwise(shifts):
        assert left.end == right.start
    moment = START
    while moment < START + timedelta(days=1):
        covering = next(s for s in shifts if s.start <= moment < s.end)
        assert covering.user == rotation.on_call(moment)
        assert covering.overridden == rotation.shift_at(moment).overridden
        moment += timedelta(minutes=30)
    assert [s.user for s in shifts if s.overridden] == ["x", "x", "x"]


def test_bad_windows_are_refused() -> None:
    rotation = Rotation("r", ("a",), 86400, handoff="09:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        coverage(rotation, datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="ends after it starts"):
        coverage(rotation, START, START)
