"""Ranking earlier scenarios, and what counts as a fix that stuck (pure: no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from teleops.memory.recurrence import MemoryWindows, Recurrence, Scenario, Tier, rank
from tests.unit.memory.scenario_builders import command, row

DAY = timedelta(days=1)
WINDOW = timedelta(hours=24)


def scenario(
    incident_id: int, tier: Tier, *, fixed: bool, came_back: timedelta | None = None, **kw: object
) -> Scenario:
    r = row(incident_id, opened=timedelta(days=incident_id), **kw)  # type: ignore[arg-type]
    commands = (command(incident_id * 10, r, exit_code=0 if fixed else 1),)
    back = r.resolved_at + came_back if (r.resolved_at and came_back is not None) else None
    return Scenario(r, tier, commands, came_back_at=back)


def test_resolved_after_a_successful_command_is_a_fix() -> None:
    assert scenario(1, Tier.SAME_FINGERPRINT, fixed=True).ended_in_fix
    assert not scenario(2, Tier.SAME_FINGERPRINT, fixed=False).ended_in_fix


def test_a_command_that_succeeded_after_the_resolution_did_not_fix_it() -> None:
    r = row(1)
    late = command(10, r, after=timedelta(hours=1))  # resolved after 20 minutes
    assert not Scenario(r, Tier.SAME_FINGERPRINT, (late,)).ended_in_fix


def test_never_resolved_is_not_a_fix_even_after_a_good_command() -> None:
    r = row(1, resolved_after=None)
    assert not Scenario(r, Tier.SAME_FINGERPRINT, (command(10, r),)).ended_in_fix


def test_fix_stuck_depends_on_the_window() -> None:
    back_soon = scenario(1, Tier.SAME_FINGERPRINT, fixed=True, came_back=timedelta(hours=2))
    back_late = scenario(2, Tier.SAME_FINGERPRINT, fixed=True, came_back=timedelta(days=3))
    never_back = scenario(3, Tier.SAME_FINGERPRINT, fixed=True)
    assert not back_soon.fix_stuck(WINDOW)
    assert back_late.fix_stuck(WINDOW)
    assert never_back.fix_stuck(WINDOW)
    assert back_late.fix_stuck(timedelta(days=2))
    assert not back_late.fix_stuck(timedelta(days=4))


def test_rank_tier_first_then_fix_that_stuck_then_recency() -> None:
    newest_unfixed = scenario(9, Tier.SAME_FINGERPRINT, fixed=False)
    old_fix_stuck = scenario(2, Tier.SAME_FINGERPRINT, fixed=True, came_back=timedelta(days=5))
    fix_not_stuck = scenario(5, Tier.SAME_FINGERPRINT, fixed=True, came_back=timedelta(hours=1))
    other_host_fix = scenario(8, Tier.OTHER_HOST, fixed=True, host="web-2")
    same_host_fix = scenario(7, Tier.SAME_HOST, fixed=True)
    ranked = rank([newest_unfixed, other_host_fix, fix_not_stuck, same_host_fix, old_fix_stuck], WINDOW)
    assert [s.row.id for s in ranked] == [2, 5, 9, 7, 8]


def test_recency_breaks_ties_within_a_rank() -> None:
    ranked = rank([scenario(n, Tier.SAME_HOST, fixed=True) for n in (3, 6, 4)], WINDOW)
    assert [s.row.id for s in ranked] == [6, 4, 3]


def recurrence(*scenarios: Scenario, opened_after_last: timedelta, host: str = "web-1") -> Recurrence:
    """This incident (#100), opened `opened_after_last` after the newest earlier resolution."""
    last_resolved = max(s.row.resolved_at for s in scenarios if s.row.resolved_at is not None)
    incident = replace(row(100, resolved_after=None, host=host), created_at=last_resolved + opened_after_last)
    return Recurrence(incident, tuple(rank(list(scenarios), WINDOW)), len(scenarios) + 1, False, MemoryWindows())


def test_fix_didnt_stick_when_back_within_the_window_after_a_fix() -> None:
    last = scenario(3, Tier.SAME_FINGERPRINT, fixed=True)
    assert recurrence(last, opened_after_last=timedelta(hours=3)).fix_didnt_stick
    assert not recurrence(last, opened_after_last=timedelta(hours=30)).fix_didnt_stick


def test_no_fix_means_nothing_to_call_unstuck() -> None:
    last = scenario(3, Tier.SAME_FINGERPRINT, fixed=False)
    assert not recurrence(last, opened_after_last=timedelta(minutes=5)).fix_didnt_stick


def test_last_is_the_newest_of_the_closest_tier_not_the_best_ranked() -> None:
    old_fix = scenario(2, Tier.SAME_FINGERPRINT, fixed=True, came_back=timedelta(days=5))
    newer_no_fix = scenario(4, Tier.SAME_FINGERPRINT, fixed=False)
    newest_elsewhere = scenario(6, Tier.OTHER_HOST, fixed=True, host="web-2")
    rec = recurrence(old_fix, newer_no_fix, newest_elsewhere, opened_after_last=timedelta(hours=1))
    assert rec.last is not None
    assert rec.last.row.id == 4
    assert rec.best_fix is not None
    assert rec.best_fix.row.id == 2


def test_run_again_offers_only_fix_commands_on_this_host_once_each() -> None:
    r = row(1)
    commands = (
        command(10, r, "systemctl restart nginx", after=timedelta(minutes=1)),
        command(11, r, "systemctl restart nginx", after=timedelta(minutes=2)),  # the same argv again
        command(12, r, "journalctl -u nginx", exit_code=1, after=timedelta(minutes=3)),  # failed
        command(13, r, "systemctl reload haproxy", host="lb-1", after=timedelta(minutes=4)),  # another host
        command(14, r, "echo after", after=timedelta(hours=2)),  # after the resolution
    )
    rec = recurrence(Scenario(r, Tier.SAME_FINGERPRINT, commands), opened_after_last=DAY * 3)
    assert [c.id for c in rec.run_again()] == [10]
    elsewhere = recurrence(Scenario(r, Tier.SAME_FINGERPRINT, commands), opened_after_last=DAY * 3, host="web-9")
    assert elsewhere.run_again() == []
