"""The read rule in the console room: who sees a command's line and output there (issue #18, the last read path).

The console is one shared room, so every message is pushed to every open tab and listed in every tab's history.
Incident announcements, notes and replies stay readable by every logged-in user (the rotation shares them, as
everywhere else). Two kinds of message carry what `teleops.commands.read_access.may_read` guards:

* a command's progress, result and output file (chat/commands.py tags them with the command's id: `Message.
  command_id`, stored as `body["command"]`);
* the line a person typed to ask for a command (`/run HOST CMD…`, or a reply to an incident's message that is
  not a chat command): stored with `body["runs"]`, and tagged with the command's id once its first result
  message answers it (ConsoleGateway.send).

Each is shown to a reader the rule lets read that command; anyone else gets the message's place in the room
with its text replaced by one line, "a command by alice on web-1 — not yours to read" (the same "keep the event,
withhold the argv and output, say why" as an incident's timeline, docs/access-control.md). A typed line whose
command is not known (yet, or ever: refused, waiting for a one-time code) is shown to its author and to readers
of every command (admins, roles with `hosts: ["*"]`) only. Whatever cannot be checked (the database is down)
is withheld: the rule fails closed.

An incident's announcement may also quote earlier commands (scenario memory's "last time" lines and Run-again
buttons: `Message.quotes`, stored with the message as `body["source"]`). It stays readable by everyone; a reader
who may not read a quoted command gets it with that line replaced by "… [command not shown to you] …" (the
wording of the incident page and `/history`) and without its Run-again button (chat/console/views.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import structlog

from teleops.commands.read_access import ReadAccess, Reader, may_read, reader_named
from teleops.domain.message import Message
from teleops.store.console_messages import ConsoleMessageRecord
from teleops.store.database import Database, StorageUnavailable
from teleops.store.read_facts import CommandReadFacts, command_read_facts
from teleops.store.users import UserStore

__all__ = [
    "COMMAND_KEY",
    "RUNS_KEY",
    "SOURCE_KEY",
    "ConsoleReaders",
    "Shown",
    "command_of",
    "guarded",
    "source_of",
    "withheld_text",
]

log = structlog.get_logger(__name__)

COMMAND_KEY = "command"  # body key: the id of the command whose line or output the message carries
RUNS_KEY = "runs"  # body key: a person's typed line that asks for a command
SOURCE_KEY = "source"  # body key: the message as the core said it (JSON), when it quotes earlier commands


def command_of(record: ConsoleMessageRecord) -> int | None:
    value = record.body.get(COMMAND_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def source_of(record: ConsoleMessageRecord) -> Message | None:
    """The message `record` was rendered from, when it quotes earlier commands (Message.quotes); else None.
    Raises ValueError when the stored source is unreadable (whoever shows it then withholds the message)."""
    raw: Any = record.body.get(SOURCE_KEY)
    if raw is None:
        return None
    try:
        return Message.from_json(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"console message {record.id} has an unreadable source: {exc}") from exc


def _quoted(record: ConsoleMessageRecord) -> set[int]:
    try:
        source = source_of(record)
    except ValueError:
        return set()  # nothing to look up: the view withholds the whole message
    return {c for q in source.quotes for c in q.commands} if source is not None else set()


def guarded(record: ConsoleMessageRecord) -> bool:
    """True when the message carries a command's line or output (the rule decides who sees it)."""
    return command_of(record) is not None or (record.author is not None and bool(record.body.get(RUNS_KEY)))


def withheld_text(record: ConsoleMessageRecord, facts: CommandReadFacts | None) -> str:
    """The one line shown instead of a message the reader may not read."""
    if facts is not None:
        return f"a command by {facts.requester} on {facts.agent_name or facts.host} — not yours to read"
    if command_of(record) is None and record.author is not None:
        return f"{record.author} asked for a command — not yours to read"
    return "a command — not yours to read"


class Shown:
    """What one publish (or one history) needs to decide per reader: the facts of the commands, fetched once."""

    def __init__(self, db: Database, facts: dict[int, CommandReadFacts], *, complete: bool) -> None:
        self._db = db
        self.facts = facts
        self.complete = complete  # False: the facts could not be read; whatever needs them is withheld

    def decide(self, record: ConsoleMessageRecord, reader: Reader) -> tuple[bool, str]:
        """(shown, why) for `reader`."""
        command = command_of(record)
        if command is None:
            if not guarded(record) or record.author == reader.name:
                return True, ""
            if reader.role is not None and ReadAccess(self._db, reader).reads_every_command():
                return True, ""
            return False, "the command it asks for is shown only to who asked for it, admins and who may read it"
        return self.may_read(command, reader)

    def may_read(self, command: int, reader: Reader) -> tuple[bool, str]:
        """(allowed, why) for `reader` and command `command` (one of the facts fetched)."""
        facts = self.facts.get(command)
        if facts is None:
            why = "the read rule could not be checked now" if not self.complete else "the command no longer exists"
            return False, why
        decision = may_read(
            reader,
            command_id=command,
            requester=facts.requester,
            host=facts.agent_name or facts.host,
            approvers=facts.approvers,
        )
        return decision.allowed, decision.reason


class ConsoleReaders:
    """Looks up readers (their role now) and command facts for the console gateway."""

    def __init__(self, db: Database, users: UserStore) -> None:
        self._db = db
        self._users = users

    async def reader(self, name: str) -> Reader:
        """`name` with their current role; role None (nothing guarded is shown) when it cannot be read."""
        try:
            return await reader_named(self._users, name)
        except StorageUnavailable:
            log.warning("console.reader_unavailable", user=name)
            return Reader(name, None)

    async def shown(self, records: Iterable[ConsoleMessageRecord]) -> Shown:
        """The facts of the commands `records` carry or quote, in one query (none when no record names one)."""
        records = list(records)
        ids: Sequence[int] = sorted(
            {c for r in records if (c := command_of(r)) is not None}.union(*(_quoted(r) for r in records))
        )
        if not ids:
            return Shown(self._db, {}, complete=True)
        try:
            return Shown(self._db, {f.id: f for f in await command_read_facts(self._db, ids)}, complete=True)
        except StorageUnavailable:
            log.warning("console.read_facts_unavailable", commands=len(ids))
            return Shown(self._db, {}, complete=False)
