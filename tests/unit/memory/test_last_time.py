"""The "last time" text: how often, who, what ran with exit codes and output, notes, resolution, fix didn't stick."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from teleops.memory.last_time import excerpt, human_duration, last_time_lines, last_time_view, ordinal
from teleops.memory.recurrence import MemoryWindows, Recurrence, Scenario, Tier
from tests.unit.memory.scenario_builders import command, note, row


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


def test_durations_use_two_units_at_most() -> None:
    assert human_duration(timedelta(seconds=45)) == "45s"
    assert human_duration(timedelta(minutes=14, seconds=5)) == "14m"
    assert human_duration(timedelta(hours=2, minutes=5)) == "2h 5m"
    assert human_duration(timedelta(days=30)) == "30d"
    assert human_duration(timedelta(days=3, hours=4, minutes=1)) == "3d 4h"


def test_excerpt_is_the_last_non_empty_line_clipped() -> None:
    assert excerpt("a\nb\n\n") == "b"
    assert excerpt("") == ""
    assert excerpt("x" * 200, 10) == "x" * 9 + "…"


def _recurrence(*, back_after: timedelta, times: int = 4, capped: bool = False) -> Recurrence:
    previous = row(7, resolved_after=timedelta(minutes=14))
    commands = (
        command(70, previous, "systemctl status nginx", exit_code=3, after=timedelta(minutes=2), output="inactive"),
        command(71, previous, "systemctl restart nginx", after=timedelta(minutes=10), requester="bob", output=""),
    )
    assert previous.resolved_at is not None
    back = previous.resolved_at + back_after
    last = Scenario(previous, Tier.SAME_FINGERPRINT, commands, (note(previous, "config reload wedged it"),), back)
    incident = replace(row(9, resolved_after=None), created_at=back)
    return Recurrence(incident, (last,), times, capped, MemoryWindows())


def test_last_time_block_reads_like_the_story() -> None:
    rec = _recurrence(back_after=timedelta(hours=3))
    lines = last_time_lines(rec, now=rec.incident.created_at)
    assert lines == [
        "🔁 4th time in 30d.",
        "Last time: #7, 3h 14m ago · handled by alice, bob · resolved by alice after 14m.",
        "⚠️ Fix didn't stick: back 3h after #7 was fixed.",
        "✘ alice: systemctl status nginx → exit 3 · inactive",
        "✔ bob: systemctl restart nginx → exit 0",
        "📝 alice: config reload wedged it",
    ]


def test_no_fix_didnt_stick_outside_the_window_and_capped_counts_say_so() -> None:
    rec = _recurrence(back_after=timedelta(days=2), times=100, capped=True)
    lines = last_time_lines(rec, now=rec.incident.created_at)
    assert lines[0] == "🔁 100th+ time in 30d."
    assert not any("didn't stick" in line for line in lines)


def test_nothing_earlier_means_no_block() -> None:
    incident = row(1, resolved_after=None)
    assert last_time_lines(Recurrence(incident, (), 1, False), now=incident.created_at) == []


def test_view_carries_run_again_and_the_fix_flags() -> None:
    rec = _recurrence(back_after=timedelta(hours=3))
    view = last_time_view(rec, now=rec.incident.created_at)
    assert view["times"] == 4
    assert view["fix_didnt_stick"] is True
    assert view["last"]["incident_id"] == 7
    assert view["last"]["ended_in_fix"] is True
    assert view["last"]["fix_stuck"] is False
    assert [c["id"] for c in view["run_again"]] == [71]
    assert view["text"][0] == "🔁 4th time in 30d."
