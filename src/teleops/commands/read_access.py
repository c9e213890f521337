"""Who may read a command — its command line (argv) and its output. One rule, applied on every read path.

A person may read a command when they

1. asked for it (the requester),
2. voted on its two-person approval (approved or denied it: they were shown it to decide),
3. hold a role whose policy has an allow rule whose `hosts` pattern covers the command's host (the canonical
   agent name, as `authorize` matches it), whatever the rule's command patterns: people who may work on a host
   may see what was done there, or
4. hold the role `admin`.

Anyone else — a viewer, an operator whose rules cover other hosts, a token of a user who no longer exists —
may not: a direct read answers as if the command did not exist (404 over the API), a list leaves the command
out, and a view that is about something readable (an incident's timeline, "last time", the postmortem export,
chat `/history`) keeps the event but withholds its argv and output and says why. Incidents and alerts
themselves stay readable by every authenticated user (the rotation shares them). docs/access-control.md,
"Who may read a command".

`may_read` is the rule (pure); `ReadAccess` applies it to stored commands, fetching the approvers in one query.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from teleops.commands.authorize import current_policy
from teleops.domain.incident import IncidentRecord, TimelineEvent
from teleops.domain.policy import Effect, Policy
from teleops.store.database import Database
from teleops.store.read_facts import approvers_of, command_read_facts

__all__ = [
    "ADMIN_ROLE",
    "WITHHELD_FIELDS",
    "ReadAccess",
    "ReadDecision",
    "Reader",
    "command_of_event",
    "may_read",
    "reader_named",
    "withhold_event_data",
]

ADMIN_ROLE = "admin"

# What a withheld command event loses: the command line, its output, and the reason text (a refusal quotes the
# command). What stays: which command (id), who asked, on which host, its status, exit code and duration.
WITHHELD_FIELDS = frozenset({"argv", "command", "text", "output", "output_excerpt", "reason"})


@dataclass(frozen=True, slots=True)
class Reader:
    """The person reading: their TeleOps user name and current role (None: not, or no longer, a user)."""

    name: str
    role: str | None


@dataclass(frozen=True, slots=True)
class ReadDecision:
    """`reason` says why for people: when refused, what the rule is and whom to ask."""

    allowed: bool
    reason: str


class _Command(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def requester(self) -> str: ...

    @property
    def agent_name(self) -> str: ...

    @property
    def host(self) -> str: ...


def may_read(
    reader: Reader,
    *,
    command_id: int,
    requester: str,
    host: str,
    approvers: Collection[str] = (),
    policy: Policy | None = None,
) -> ReadDecision:
    """May `reader` read command `command_id` (asked by `requester`, run on agent `host`, voted on by
    `approvers`)? `policy` defaults to the installed one. Never raises."""
    if reader.role is None:
        return ReadDecision(
            False,
            f"{reader.name!r} is not a TeleOps user, so no command is shown; an admin adds people under `users:`",
        )
    if reader.name == requester:
        return ReadDecision(True, f"{reader.name} asked for command {command_id}")
    if reader.role == ADMIN_ROLE:
        return ReadDecision(True, f'{reader.name} holds the role "{ADMIN_ROLE}"')
    if reader.name in approvers:
        return ReadDecision(True, f"{reader.name} voted on the approval of command {command_id}")
    rules = (policy or current_policy()).roles.get(reader.role, ())
    covering = next((r for r in rules if r.effect is Effect.ALLOW and r.matches_host(host)), None)
    if covering is not None:
        return ReadDecision(True, f"{covering.describe()} covers {host}")
    return ReadDecision(
        False,
        f"command {command_id} on {host} is shown only to who asked for it ({requester}), who voted on its "
        f'approval, admins and roles whose policy covers {host}; role "{reader.role}" of {reader.name} has no '
        f"rule for {host}. Ask {requester} or an admin",
    )


def withhold_event_data(data: Mapping[str, object], decision: ReadDecision) -> dict[str, object]:
    """A command event's data without what `decision` withholds (WITHHELD_FIELDS), plus `withheld` = why."""
    kept = {k: v for k, v in data.items() if k not in WITHHELD_FIELDS}
    kept["withheld"] = decision.reason
    return kept


def command_of_event(event: TimelineEvent) -> int | None:
    """The command a timeline event is about (`command.*` events carry `command_id`), else None."""
    value = event.data.get("command_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ReadAccess:
    """The rule for one reader over stored commands. Build per request (`Reader` holds the role read now)."""

    def __init__(self, db: Database, reader: Reader, *, policy: Policy | None = None) -> None:
        self._db = db
        self.reader = reader
        self._policy = policy

    async def decide(self, records: Iterable[_Command]) -> dict[int, ReadDecision]:
        """The decision for each command (by id). One query for the approvers, none when no vote can matter."""
        records = list(records)
        undecided = [r.id for r in records if not self._decided_without_votes(r)]
        voters = await approvers_of(self._db, undecided) if undecided else {}
        return {r.id: self._decide(r, voters.get(r.id, frozenset())) for r in records}

    async def decide_ids(self, command_ids: Iterable[int]) -> dict[int, ReadDecision]:
        """Decisions for commands known only by id (timeline events, scenario memory), read without their output.
        An id that names no command is refused: there is nothing to show."""
        wanted = list(dict.fromkeys(command_ids))
        if not wanted:
            return {}
        decisions = {f.id: self._decide(f, f.approvers) for f in await command_read_facts(self._db, wanted)}
        gone = ReadDecision(False, "the command no longer exists")
        return {i: decisions.get(i, gone) for i in wanted}

    async def timeline(self, events: Sequence[TimelineEvent]) -> list[TimelineEvent]:
        """`events` with the argv and output of each command event the reader may not read withheld
        (`withhold_event_data`); every event stays, in order."""
        decisions = await self.decide_ids(i for e in events if (i := command_of_event(e)) is not None)
        shown: list[TimelineEvent] = []
        for event in events:
            command_id = command_of_event(event)
            decision = decisions.get(command_id) if command_id is not None else None
            if decision is not None and not decision.allowed:
                event = replace(event, data=withhold_event_data(event.data, decision))
            shown.append(event)
        return shown

    async def incident(self, record: IncidentRecord) -> IncidentRecord:
        """The incident with its timeline as `timeline` shows it to the reader."""
        return replace(record, timeline=tuple(await self.timeline(record.timeline)))

    def _decide(self, command: _Command, approvers: Collection[str]) -> ReadDecision:
        # The host is the canonical agent name, as `authorize` matched it when the command was asked for.
        return may_read(
            self.reader,
            command_id=command.id,
            requester=command.requester,
            host=command.agent_name or command.host,
            approvers=approvers,
            policy=self._policy,
        )

    def reads_every_command(self) -> bool:
        """True for an admin, and for a role with an allow rule for every host (`hosts: ["*"]`): full-text search
        may then look into command lines and output. For anyone else it must not (a hit would tell what some
        command they may not read printed), so it searches incidents and notes only."""
        role = self.reader.role
        if role is None:
            return False
        if role == ADMIN_ROLE:
            return True
        rules = (self._policy or current_policy()).roles.get(role, ())
        return any(r.effect is Effect.ALLOW and "*" in r.hosts for r in rules)

    def _decided_without_votes(self, record: _Command) -> bool:
        reader = self.reader
        return reader.role is None or reader.name == record.requester or reader.role == ADMIN_ROLE


async def reader_named(users: _Users, name: str) -> Reader:
    """The reader `name` with the role they hold now (None when they are no longer a user)."""
    user = await users.get(name)
    return Reader(name, user.role if user is not None else None)


class _User(Protocol):
    @property
    def role(self) -> str: ...


class _Users(Protocol):
    async def get(self, name: str) -> _User | None: ...
