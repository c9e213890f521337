"""What the read rule (teleops.commands.read_access) needs to know about stored commands, without their output:
who asked, where it ran, and who voted on its approval (the `approvals` table, store/approvals.py). One query,
however many commands."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from teleops.store.approvals import approvals
from teleops.store.database import Database
from teleops.store.schema import commands

__all__ = ["CommandReadFacts", "approvers_of", "command_read_facts"]


@dataclass(frozen=True, slots=True)
class CommandReadFacts:
    id: int
    requester: str
    host: str
    agent_name: str
    approvers: frozenset[str]  # everyone who approved it, and who denied it; empty without an approval


def _voters(approved_by: list[str] | None, decided_by: str | None) -> frozenset[str]:
    voters = {str(name) for name in approved_by or ()}
    if decided_by:
        voters.add(str(decided_by))
    return frozenset(voters)


async def approvers_of(db: Database, command_ids: Sequence[int]) -> dict[int, frozenset[str]]:
    """Who voted on each command's approval (every approver, and the one who denied it): they were shown it to
    decide, so they may read it. Commands without an approval are absent. One query. Raises StorageUnavailable."""
    if not command_ids:
        return {}
    query = select(approvals.c.command_id, approvals.c.approved_by, approvals.c.decided_by).where(
        approvals.c.command_id.in_(sorted(set(command_ids)))
    )
    return {int(row.command_id): _voters(row.approved_by, row.decided_by) for row in await db.all(query)}


async def command_read_facts(db: Database, command_ids: Sequence[int]) -> list[CommandReadFacts]:
    """The facts of the commands with these ids that exist (in no particular order). Raises StorageUnavailable."""
    if not command_ids:
        return []
    query = (
        select(
            commands.c.id,
            commands.c.requester,
            commands.c.host,
            commands.c.agent_name,
            approvals.c.approved_by,
            approvals.c.decided_by,
        )
        .select_from(commands.outerjoin(approvals, approvals.c.command_id == commands.c.id))
        .where(commands.c.id.in_(sorted(set(command_ids))))
    )
    return [
        CommandReadFacts(int(row.id), row.requester, row.host, row.agent_name, _voters(row.approved_by, row.decided_by))
        for row in await db.all(query)
    ]
