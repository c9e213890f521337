"""Scenario memory as the controller uses it: one object built at startup from the `memory:` settings.

It answers the notifier (inside the ingest transaction: the "last time" block and Run-again buttons), the
conversation (re-checking a Run-again press), the REST API and the web UI (history, search, export).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from teleops.commands.read_access import ReadAccess
from teleops.config.settings import MemorySettings
from teleops.domain.message import Button, Extra, Quote
from teleops.memory.last_time import last_time_lines, last_time_quotes, last_time_view
from teleops.memory.recurrence import MemoryWindows, Recurrence, find_recurrence
from teleops.memory.run_again import RunAgain, button_data, check_run_again
from teleops.memory.runbooks import BoundStep, Runbook, bind, load_runbooks
from teleops.store.database import Database, Transaction
from teleops.store.scenarios import in_savepoint
from teleops.store.search import SearchHit, search_scenarios

__all__ = ["FIRST_RESPONSE_PRINCIPAL", "ScenarioMemory"]

log = structlog.get_logger(__name__)

FIRST_RESPONSE_PRINCIPAL = "teleops-firstresponse"
MAX_RUN_AGAIN_BUTTONS = 3
_BUTTON_LABEL_CHARS = 28


class ScenarioMemory:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], datetime],
        windows: MemoryWindows | None = None,
        runbooks: Mapping[str, Runbook] | None = None,
        first_response: bool = False,
    ) -> None:
        self.db = db
        self.clock = clock
        self.windows = windows or MemoryWindows()
        self.runbooks: Mapping[str, Runbook] = runbooks or {}
        self.first_response = first_response

    @classmethod
    def from_settings(cls, settings: MemorySettings, db: Database, *, clock: Callable[[], datetime]) -> ScenarioMemory:
        """Raises RunbookError when a runbook file in `memory.runbooks_dir` is unusable."""
        windows = MemoryWindows(
            fix_window=settings.fix_window.timedelta,
            lookback=settings.lookback.timedelta,
        )
        return cls(
            db,
            clock=clock,
            windows=windows,
            runbooks=load_runbooks(settings.runbooks_dir) if settings.runbooks_dir else {},
            first_response=settings.first_response_role is not None,
        )

    # -- the notification ---------------------------------------------------------------------------

    def announcement(self, conn: Transaction, incident: dict[str, Any]) -> Extra | None:
        """The notifier's ExtraSource: "last time" lines, Run-again buttons, first-response note."""
        incident_id = int(incident["id"])
        recurrence = in_savepoint(conn, lambda c: find_recurrence(c, incident_id, windows=self.windows))
        lines: list[str] = []
        buttons: list[Button] = []
        quotes: list[Quote] = []  # which lines and buttons quote which commands: the console withholds per reader
        if recurrence is not None:
            lines.extend(last_time_lines(recurrence, now=self.clock()))
            quotes.extend(last_time_quotes(recurrence))
            for command_id, button in self._buttons(recurrence):
                buttons.append(button)
                quotes.append(Quote((command_id,), button=button.data))
        lines.extend(self._runbook_lines(incident))
        if not lines and not buttons:
            return None
        return Extra(lines=tuple(lines), buttons=tuple(buttons), quotes=tuple(quotes))

    def _buttons(self, recurrence: Recurrence) -> list[tuple[int, Button]]:
        """The Run-again buttons, each with the command it runs again."""
        buttons = []
        for command in recurrence.run_again()[:MAX_RUN_AGAIN_BUTTONS]:
            text = " ".join(command.argv)
            label = text if len(text) <= _BUTTON_LABEL_CHARS else text[: _BUTTON_LABEL_CHARS - 1] + "…"
            buttons.append((command.id, Button(f"↻ {label}", button_data(recurrence.incident.id, command.id))))
        return buttons

    def _runbook_lines(self, incident: dict[str, Any]) -> list[str]:
        runbook = self.runbooks.get(str(incident.get("name", "")))
        if runbook is None:
            return []
        lines = [f"📖 Runbook: {runbook.description}" if runbook.description else "📖 Runbook available."]
        for bound in self.bound_diagnostics(runbook, incident):
            name = bound.step.name
            if bound.argv is None:
                lines.append(f"🩺 {name}: unavailable ({bound.unavailable}).")
            elif bound.step.auto and self.first_response and incident.get("host"):
                lines.append(f"🩺 First response: running {' '.join(bound.argv)} (output on the timeline).")
        for fix in runbook.fixes:
            fixed = bind(runbook, fix, _labels(incident))
            if fixed.argv is None:
                lines.append(f"🔧 {fix.name}: unavailable ({fixed.unavailable}).")
            else:
                lines.append(f"🔧 Suggested fix: {' '.join(fixed.argv)}")
        return lines

    def bound_diagnostics(self, runbook: Runbook, incident: Mapping[str, Any]) -> list[BoundStep]:
        return [bind(runbook, step, _labels(incident)) for step in runbook.diagnostics]

    # -- reads for people -----------------------------------------------------------------------

    async def recurrence(self, incident_id: int) -> Recurrence | None:
        return await self.db.run_in_transaction(lambda conn: find_recurrence(conn, incident_id, windows=self.windows))

    async def history(self, incident_id: int, *, access: ReadAccess | None = None) -> dict[str, Any] | None:
        """The `last_time` view of an incident, or None when it does not exist. With `access`, the commands its
        reader may not read are withheld (teleops.commands.read_access); None shows all (the CLI, on the host)."""
        recurrence = await self.recurrence(incident_id)
        if recurrence is None:
            return None
        return last_time_view(recurrence, now=self.clock(), withheld=await _withheld(recurrence, access))

    async def check_run_again(self, incident_id: int, command_id: int) -> RunAgain:
        """Re-derive a Run-again choice. Raises RunAgainRefused."""
        return await self.db.run_in_transaction(
            lambda conn: check_run_again(conn, incident_id, command_id, windows=self.windows)
        )

    async def history_text(self, incident_id: int, *, access: ReadAccess | None = None) -> str:
        """`/history` in reply to an incident: its "last time" block, or why there is none. `access` as in
        `history`."""
        recurrence = await self.recurrence(incident_id)
        if recurrence is None:
            return f"Incident #{incident_id} does not exist; /incidents lists the open ones."
        lines = last_time_lines(recurrence, now=self.clock(), withheld=await _withheld(recurrence, access))
        if not lines:
            return f"#{incident_id} has no earlier occurrence that TeleOps knows of."
        return f"#{incident_id} {recurrence.incident.name}\n" + "\n".join(lines)

    async def search(
        self, query: str, *, limit: int = 20, offset: int = 0, access: ReadAccess | None = None
    ) -> list[SearchHit]:
        """Scenarios matching every word of `query`, best first. With `access`, command lines and output are
        searched only when its reader may read every command (`ReadAccess.reads_every_command`). Raises
        StorageUnavailable."""
        commands = access is None or access.reads_every_command()
        return await search_scenarios(self.db, query, limit=limit, offset=offset, commands=commands)

    async def search_text(self, query: str, *, limit: int = 10, access: ReadAccess | None = None) -> str:
        """`/history QUERY`: the best matches, one line each, with where the words were found."""
        hits = await self.search(query, limit=limit, access=access)
        partial = access is not None and not access.reads_every_command()
        scope = " (incidents and notes only: you may not read every command)" if partial else ""
        if not hits:
            return f"No scenario mentions {query!r}{scope}. Try fewer or other words."
        lines = [f"Scenarios matching {query!r}{scope}, best first:"]
        for hit in hits:
            when = f"{hit.created_at:%Y-%m-%d}"
            snippet = f" — …{hit.snippet}…" if hit.snippet else ""
            lines.append(f"#{hit.incident_id} {hit.name} on {hit.host or '?'} ({hit.status}, {when}){snippet}")
        return "\n".join(lines)


async def _withheld(recurrence: Recurrence, access: ReadAccess | None) -> dict[int, str]:
    """The commands of `recurrence` that `access`'s reader may not read, with why."""
    if access is None:
        return {}
    ids = [c.id for s in recurrence.scenarios for c in s.commands]
    decisions = await access.decide_ids(ids)
    return {i: d.reason for i, d in decisions.items() if not d.allowed}


def _labels(incident: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(incident.get("labels") or {}).items()}
