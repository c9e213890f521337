"""`Duration`: a duration text parsed once, keeping the text as written for messages and dumps."""

from __future__ import annotations

import copy
import pickle
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teleops.domain.duration import Duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("250ms", 0.25), ("0s", 0), (" 5 m ", 300)],
)
def test_a_duration_knows_its_length_in_seconds_and_as_a_timedelta(text: str, seconds: float) -> None:
    duration = Duration(text)
    assert duration.seconds == pytest.approx(seconds)
    assert duration.timedelta == timedelta(seconds=seconds)


def test_whole_seconds_stay_whole_as_they_did_when_parsed_at_each_use() -> None:
    assert (f"{Duration('30s').seconds}", f"{Duration('2m').seconds}", f"{Duration('1500ms').seconds}") == (
        "30", "120", "1.5"
    )  # fmt: skip


def test_a_duration_shows_the_text_it_was_written_as() -> None:
    duration = Duration(" 5m ")
    assert (str(duration), duration.text, f"every {duration}") == (" 5m ", " 5m ", "every  5m ")
    assert repr(duration) == "Duration(' 5m ')"


@pytest.mark.parametrize("text", ["", "0", "10", "5 weeks", "-1m", "1.5h", "5mm", "m"])
def test_a_bad_text_is_refused_with_the_same_message_as_parse_duration(text: str) -> None:
    message = f"{text!r} is not a duration; write it like 30s, 10m, 2h or 7d"
    with pytest.raises(ValueError, match="is not a duration") as expected:
        parse_duration(text)
    with pytest.raises(ValueError, match="is not a duration") as raised:
        Duration(text)
    assert str(raised.value) == str(expected.value) == message


@pytest.mark.parametrize("number", [30, 1.5, True])
def test_a_number_is_not_a_duration_text(number: object) -> None:
    with pytest.raises(TypeError, match="written as text like 30s"):
        Duration(number)  # type: ignore[arg-type]


def test_durations_are_equal_when_written_the_same_way() -> None:
    assert Duration("1m") == Duration("1m")
    assert hash(Duration("1m")) == hash(Duration("1m"))
    assert Duration("60s") != Duration("1m")  # same length, different text: a dump would differ
    assert Duration("60s").seconds == Duration("1m").seconds
    assert Duration("1m") != "1m"


def test_a_duration_cannot_be_changed() -> None:
    duration = Duration("5m")
    with pytest.raises(AttributeError, match="immutable"):
        duration._seconds = 1
    with pytest.raises(AttributeError, match="immutable"):
        setattr(duration, "extra", 1)  # noqa: B010 (mypy would refuse the attribute)
    with pytest.raises(AttributeError, match="immutable"):
        del duration._text
    assert (duration.seconds, str(duration)) == (300, "5m")


def test_copies_and_pickles_keep_the_text_and_length() -> None:
    duration = Duration("90s")
    for clone in (copy.copy(duration), copy.deepcopy(duration), pickle.loads(pickle.dumps(duration))):  # noqa: S301
        assert (clone, clone.seconds, str(clone)) == (duration, 90, "90s")


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_any_number_with_a_unit_round_trips_through_its_text(amount: int, unit: str) -> None:
    text = f"{amount}{unit}"
    duration = Duration(text)
    assert str(duration) == text
    assert duration.seconds == parse_duration(text)
    assert type(duration.seconds) is type(parse_duration(text))  # "30s" stays 30, not 30.0, in messages and JSON
    assert Duration(str(duration)) == duration
