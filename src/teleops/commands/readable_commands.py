"""Lists of commands under the read rule: a page of history, and each host's latest commands, holding only what
the reader may read (commands/read_access.py). Whoever may not read a command does not learn it exists here.

The filters people choose (host, person, status) are applied in SQL (store/command_history.py); the read rule
is applied to the rows that come back (its host patterns are globs of the policy), reading further batches
until the page is full, at most `SCAN_LIMIT` rows per page so a reader who may read almost nothing cannot make
one page view read the whole table. When that limit stops a page short, the page says so and "Older" carries on
from where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from teleops.commands.read_access import ReadAccess
from teleops.store.command_history import CommandQuery, CommandSummary, recent_commands_by_agent, search_commands
from teleops.store.database import Database

__all__ = ["SCAN_LIMIT", "CommandPage", "readable_page", "readable_recent"]

SCAN_LIMIT = 2000
_RECENT_SCAN = 25  # per host: how many of its newest commands are looked at for the few shown


@dataclass(frozen=True, slots=True)
class CommandPage:
    commands: Sequence[CommandSummary]
    older: int | None  # `before` for the next (older) page; None on the last page
    stopped_early: bool = False  # SCAN_LIMIT rows were read without filling the page


async def readable_page(
    db: Database, access: ReadAccess, query: CommandQuery, *, scan_limit: int = SCAN_LIMIT, batch: int | None = None
) -> CommandPage:
    """One page of `query.limit` commands matching `query` that `access`'s reader may read, newest first, read
    `batch` rows at a time (default: twice the page, at least 50). Raises StorageUnavailable."""
    shown: list[CommandSummary] = []
    before = query.before
    scanned = 0
    batch = min(batch or max(query.limit * 2, 50), scan_limit)
    while True:
        rows = await search_commands(db, replace(query, before=before, limit=batch))
        if not rows:
            return CommandPage(shown, None)
        decisions = await access.decide(rows)
        for row in rows:
            if not decisions[row.id].allowed:
                continue
            if len(shown) == query.limit:
                return CommandPage(shown, shown[-1].id)  # one more readable row exists: there is an older page
            shown.append(row)
        scanned += len(rows)
        before = rows[-1].id
        if len(rows) < batch:
            return CommandPage(shown, None)
        if scanned >= scan_limit:
            return CommandPage(shown, before, stopped_early=True)


async def readable_recent(
    db: Database, access: ReadAccess, agent_names: Sequence[str], *, per_host: int
) -> dict[str, list[CommandSummary]]:
    """The newest `per_host` commands of each agent that `access`'s reader may read (looking at that agent's
    newest `_RECENT_SCAN` commands). Raises StorageUnavailable."""
    recent = await recent_commands_by_agent(db, agent_names, per_agent=max(per_host, _RECENT_SCAN))
    decisions = await access.decide(c for rows in recent.values() for c in rows)
    return {name: [c for c in rows if decisions[c.id].allowed][:per_host] for name, rows in recent.items()}
