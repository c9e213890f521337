"""Run again: what a "Run again" button means, and the re-check made every time one is pressed.

The button carries only ids — `again:INCIDENT:COMMAND` (preview) and `again!:INCIDENT:COMMAND` (confirmed),
at most 46 bytes — never the command text. On every press the command is looked up again and must still be
one that preceded the resolution of an earlier scenario of *this* incident, on this incident's host. Then it
goes through the whole command pipeline as the person who pressed; nothing here ever runs a command.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from teleops.memory.recurrence import MemoryWindows, find_recurrence
from teleops.store.database import Transaction

__all__ = ["RunAgain", "RunAgainRefused", "button_data", "check_run_again", "parse_button"]

MAX_ID = 2**63 - 1
_DATA = re.compile(r"again(!?):([1-9]\d{0,18}):([1-9]\d{0,18})")  # 64-bit ids: at most 46 bytes in all


def button_data(incident_id: int, command_id: int, *, confirm: bool = False) -> str:
    return f"again{'!' if confirm else ''}:{incident_id}:{command_id}"


def parse_button(data: str) -> tuple[bool, int, int] | None:
    """(confirmed, incident id, command id), or None when `data` is not a Run-again button."""
    match = _DATA.fullmatch(data)  # fullmatch: `$` would accept a trailing newline
    if match is None:
        return None
    incident_id, command_id = int(match.group(2)), int(match.group(3))
    if max(incident_id, command_id) > MAX_ID:
        return None  # no such row; and PostgreSQL would refuse the number rather than find nothing
    return match.group(1) == "!", incident_id, command_id


@dataclass(frozen=True, slots=True)
class RunAgain:
    incident_id: int
    command_id: int
    from_incident_id: int
    host: str
    argv: tuple[str, ...]

    @property
    def text(self) -> str:
        """The command line that splits back into exactly `argv` (the pipeline splits it with shlex)."""
        return shlex.join(self.argv)

    def preview(self) -> str:
        return f"Run `{self.text}` on {self.host}? (as you, under your policy; it ran on #{self.from_incident_id})"


class RunAgainRefused(Exception):
    """The button no longer stands for a command that may be offered again; the message says why."""


def check_run_again(conn: Transaction, incident_id: int, command_id: int, *, windows: MemoryWindows) -> RunAgain:
    """The command to offer again, re-derived from the database. Raises RunAgainRefused."""
    recurrence = find_recurrence(conn, incident_id, windows=windows)
    if recurrence is None:
        raise RunAgainRefused(f"incident #{incident_id} does not exist; nothing was run")
    if recurrence.incident.status == "resolved":
        raise RunAgainRefused(f"#{incident_id} is already resolved; nothing was run. Use /run HOST CMD if needed")
    for command in recurrence.run_again():
        if command.id == command_id and command.host == recurrence.incident.host:
            return RunAgain(incident_id, command.id, command.incident_id, command.host, tuple(command.argv))
    raise RunAgainRefused(
        f"command {command_id} is not one that fixed an earlier occurrence of #{incident_id} on "
        f"{recurrence.incident.host or 'its host'}; nothing was run. Reply to the alert with the command instead"
    )
