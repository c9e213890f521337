"""Recurrence lookup: which earlier scenarios look like this incident, and which of them ended in a fix.

Candidates come in tiers: the same `(source, fingerprint)` (the predecessor chain), then the same alert name on
the same host, then the same name on other hosts. Within a tier a fix that stuck ranks above a fix that did
not, which ranks above no fix; then the newer one first.

A scenario *ended in a fix* when it was resolved after a command that succeeded (exit 0). The fix *stuck* when
the same alert did not come back within `fix_window` of the resolution.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from teleops.domain.redaction import MASK
from teleops.store.database import Transaction
from teleops.store.scenarios import (
    ScenarioCommand,
    ScenarioNote,
    ScenarioRow,
    commands_of,
    count_recent,
    earlier_scenarios,
    notes_of,
    outputs_of,
)

__all__ = ["MemoryWindows", "Recurrence", "Scenario", "Tier", "find_recurrence", "rank"]

CANDIDATES_PER_TIER = 10
COUNT_LIMIT = 100  # "100+ times in 30 days": counting stops here so the lookup stays bounded


class Tier(enum.IntEnum):
    SAME_FINGERPRINT = 0
    SAME_HOST = 1
    OTHER_HOST = 2


@dataclass(frozen=True, slots=True)
class MemoryWindows:
    fix_window: timedelta = timedelta(hours=24)
    lookback: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Scenario:
    row: ScenarioRow
    tier: Tier
    commands: tuple[ScenarioCommand, ...] = ()
    notes: tuple[ScenarioNote, ...] = ()
    came_back_at: datetime | None = None  # when the same alert next fired; None: not since

    @property
    def fix_commands(self) -> tuple[ScenarioCommand, ...]:
        """Commands that succeeded before the resolution: what "fixed it" (empty if it never resolved)."""
        resolved = self.row.resolved_at
        if resolved is None:
            return ()
        return tuple(
            c
            for c in self.commands
            if c.status == "succeeded" and c.exit_code == 0 and c.finished_at is not None and c.finished_at <= resolved
        )

    @property
    def ended_in_fix(self) -> bool:
        return bool(self.fix_commands)

    def fix_stuck(self, window: timedelta) -> bool:
        """Ended in a fix, and the alert stayed away for at least `window` after the resolution."""
        if not self.ended_in_fix or self.row.resolved_at is None:
            return False
        return self.came_back_at is None or self.came_back_at - self.row.resolved_at > window

    @property
    def time_to_resolve(self) -> timedelta | None:
        if self.row.resolved_at is None:
            return None
        return max(timedelta(0), self.row.resolved_at - self.row.created_at)


def _fix_rank(scenario: Scenario, window: timedelta) -> int:
    if scenario.fix_stuck(window):
        return 0
    return 1 if scenario.ended_in_fix else 2


def rank(scenarios: Sequence[Scenario], window: timedelta) -> list[Scenario]:
    """Tier first, then fix that stuck > fix that did not stick > no fix, then newest first."""
    return sorted(scenarios, key=lambda s: (s.tier, _fix_rank(s, window), -s.row.id))


@dataclass(frozen=True, slots=True)
class Recurrence:
    """What scenario memory knows about an incident's past."""

    incident: ScenarioRow
    scenarios: tuple[Scenario, ...]  # ranked (see `rank`)
    times: int  # occurrences within the lookback, this one included
    times_capped: bool  # True: at least `times` (counting stopped at COUNT_LIMIT)
    windows: MemoryWindows = field(default_factory=MemoryWindows)

    @property
    def last(self) -> Scenario | None:
        """The most recent earlier occurrence in the closest tier: "last time"."""
        if not self.scenarios:
            return None
        tier = min(s.tier for s in self.scenarios)
        return max((s for s in self.scenarios if s.tier == tier), key=lambda s: s.row.id)

    @property
    def best_fix(self) -> Scenario | None:
        """The best-ranked earlier scenario that ended in a fix."""
        return next((s for s in self.scenarios if s.ended_in_fix), None)

    @property
    def fix_didnt_stick(self) -> bool:
        """The last occurrence ended in a fix, and this incident opened within `fix_window` of its resolution."""
        last = self.last
        if last is None or last.tier is Tier.OTHER_HOST or not last.ended_in_fix or last.row.resolved_at is None:
            return False
        return self.incident.created_at - last.row.resolved_at <= self.windows.fix_window

    def run_again(self) -> list[ScenarioCommand]:
        """The commands that preceded the best fix's resolution and ran on this incident's host (one per argv).
        A command stored with a secret masked is not offered: its original is gone (store/sealed_argv.py), and
        running `[REDACTED]` would not be running it again."""
        best = self.best_fix
        if best is None or self.incident.host is None:
            return []
        seen: set[tuple[str, ...]] = set()
        choices = []
        for command in best.fix_commands:
            key = tuple(command.argv)
            if any(MASK in arg for arg in key):
                continue
            if command.host == self.incident.host and key not in seen:
                seen.add(key)
                choices.append(command)
        return choices


def find_recurrence(
    conn: Transaction, incident_id: int, *, windows: MemoryWindows, per_tier: int = CANDIDATES_PER_TIER
) -> Recurrence | None:
    """The ranked earlier scenarios of `incident_id`, or None when the incident does not exist.

    Bounded: indexed lookups of at most `per_tier` rows per tier, a count that stops at COUNT_LIMIT, the
    candidates' commands without output, then output and notes only for the scenarios shown ("last time" and
    the best fix).
    """
    found = earlier_scenarios(conn, incident_id, chain_limit=per_tier, host_limit=per_tier * 2, name_limit=per_tier * 3)
    if found is None:
        return None
    incident = found.incident
    chain = found.same_fingerprint
    taken = {r.id for r in chain}
    on_host = [r for r in found.same_name_host if r.id not in taken][:per_tier]
    taken |= {r.id for r in on_host}
    elsewhere = [r for r in found.same_name if r.id not in taken and r.host != incident.host][:per_tier]
    tiers = ((Tier.SAME_FINGERPRINT, chain), (Tier.SAME_HOST, on_host), (Tier.OTHER_HOST, elsewhere))
    commands = commands_of(conn, [r.id for _, rows in tiers for r in rows], with_output=False)
    scenarios: list[Scenario] = []
    for tier, rows in tiers:
        for index, row in enumerate(rows):
            came_back = _came_back(tier, rows, index, incident)
            scenarios.append(Scenario(row, tier, tuple(commands.get(row.id, ())), came_back_at=came_back))
    ranked = rank(scenarios, windows.fix_window)
    draft = Recurrence(incident, tuple(ranked), 0, False, windows)
    shown = {s.row.id for s in (draft.last, draft.best_fix) if s is not None}
    notes = notes_of(conn, sorted(shown))
    outputs = outputs_of(conn, [c.id for s in ranked if s.row.id in shown for c in s.commands])
    ranked = [
        replace(
            s,
            commands=tuple(replace(c, output_tail=outputs.get(c.id, "")) for c in s.commands),
            notes=tuple(notes.get(s.row.id, ())),
        )
        if s.row.id in shown
        else s
        for s in ranked
    ]
    since = incident.created_at - windows.lookback
    if chain:
        earlier = count_recent(
            conn, incident.source, incident.fingerprint, before_id=incident.id, since=since, cap=COUNT_LIMIT
        )
    else:
        earlier = len([r for r in on_host if r.created_at >= since])
    return Recurrence(incident, tuple(ranked), earlier + 1, earlier >= COUNT_LIMIT, windows)


def _came_back(tier: Tier, rows: Sequence[ScenarioRow], index: int, incident: ScenarioRow) -> datetime | None:
    """When the alert fired next after rows[index] (rows are newest first)."""
    row = rows[index]
    for newer in reversed(rows[:index]):
        if tier is not Tier.OTHER_HOST or newer.host == row.host:
            return newer.created_at
    return incident.created_at if tier is not Tier.OTHER_HOST else None
