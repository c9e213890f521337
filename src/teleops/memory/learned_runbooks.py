"""Learned runbooks: a runbook YAML proposed from the scenarios of one alert whose fix stuck, for a person to review.

Nothing here is trusted automatically: the proposal lists, as fixes, the commands that preceded a resolution
that held (the alert stayed away for `fix_window`), with how often and by whom, as literal argv. It never marks
anything `auto`; a person decides what becomes a diagnostic and what label becomes a parameter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from teleops.memory.recurrence import MemoryWindows, Scenario, Tier
from teleops.store.database import Database, Transaction
from teleops.store.scenarios import ScenarioRow, commands_of, scenarios_named

__all__ = ["FixEvidence", "propose_runbook", "suggest_runbook"]

SCENARIOS_READ = 500


@dataclass(frozen=True, slots=True)
class FixEvidence:
    argv: tuple[str, ...]
    incidents: tuple[int, ...]
    people: tuple[str, ...]


def _stuck_fixes(rows: Sequence[ScenarioRow], conn: Transaction, windows: MemoryWindows) -> list[Scenario]:
    """Scenarios whose fix stuck; "came back" is the next incident of the same (source, fingerprint)."""
    commands = commands_of(conn, [r.id for r in rows])
    newer: dict[tuple[str, str], ScenarioRow] = {}
    stuck = []
    for row in sorted(rows, key=lambda r: -r.id):  # newest first: the next occurrence is already seen
        key = (row.source, row.fingerprint)
        back = newer[key].created_at if key in newer else None
        newer[key] = row
        scenario = Scenario(row, Tier.SAME_FINGERPRINT, tuple(commands.get(row.id, ())), came_back_at=back)
        if scenario.fix_stuck(windows.fix_window):
            stuck.append(scenario)
    return stuck


def propose_runbook(alert: str, scenarios: Sequence[Scenario]) -> tuple[str, list[FixEvidence]]:
    """The proposal as YAML text (loadable by runbooks.parse_runbook) and the evidence behind each fix."""
    seen: dict[tuple[str, ...], tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
    for scenario in scenarios:
        for command in scenario.fix_commands:
            argv = tuple(command.argv)
            if any("{" in part or "}" in part for part in argv):
                continue  # braces would read as parameter slots; a person must write that one by hand
            incidents, people = seen[argv]
            if scenario.row.id not in incidents:
                incidents.append(scenario.row.id)
            if command.requester not in people:
                people.append(command.requester)
    evidence = sorted(
        (FixEvidence(argv, tuple(ids), tuple(people)) for argv, (ids, people) in seen.items()),
        key=lambda e: (-len(e.incidents), e.argv),
    )
    fixes = [
        {
            "name": f"{' '.join(e.argv)} (fixed it {len(e.incidents)}×: "
            f"{', '.join(f'#{i}' for i in e.incidents[:5])}; by {', '.join(e.people)})",
            "command": list(e.argv),
        }
        for e in evidence
    ]
    header = (
        f"# Proposed by `teleops runbook suggest {alert}` from {len(scenarios)} scenario(s) whose fix stuck.\n"
        "# REVIEW BEFORE USE: check every command; turn host- or service-specific words into params with a\n"
        "# regex or enum; move read-only checks to diagnostics (only those may be `auto: true`).\n"
    )
    body = yaml.safe_dump(
        {"alert": alert, "description": f"TODO: what {alert} means and who owns it", "fixes": fixes},
        sort_keys=False,
        allow_unicode=True,
    )
    return header + body, evidence


async def suggest_runbook(db: Database, alert: str, *, windows: MemoryWindows) -> tuple[str, list[FixEvidence]]:
    """Read the newest SCENARIOS_READ scenarios of `alert` and propose a runbook. Raises StorageUnavailable."""

    def read(conn: Transaction) -> list[Scenario]:
        return _stuck_fixes(scenarios_named(conn, alert, limit=SCENARIOS_READ), conn, windows)

    return propose_runbook(alert, await db.run_in_transaction(read))
