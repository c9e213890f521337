"""Which agent may report on which command (docs/threat-model.md T13, T14): only the connection a command was sent to.

An agent authenticates with its own token, but every message it sends names a command id. Without this check
one agent could write another host's result (`exit` with invented output), stream output into it, or end a
command waiting for approval by "refusing" it. Every report (started, output, exit, refused) is checked
against the command's `agent_name` and dispatch state; anything else is refused, logged, counted in
`teleops_agent_messages_rejected_total{reason}` and audited (`agent.message_rejected`, at most
`AUDITED_PER_SESSION` a session so that a rogue agent cannot flood the audit log; the rest are counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import structlog

from teleops.domain.clock import Clock
from teleops.domain.command import CommandNotFound, CommandStatus
from teleops.store.audit import AuditUnavailable, record
from teleops.store.commands import get_command
from teleops.store.database import Database, StorageUnavailable
from teleops.wire.command_ids import row_id_of, wire_command_id

__all__ = ["AUDITED_PER_SESSION", "CommandOwnership"]

log = structlog.get_logger(__name__)

AUDITED_PER_SESSION = 20


class CommandOwnership:
    """The hub's record of where each in-flight command was sent, with a database fallback after a restart."""

    def __init__(self, db: Database, *, clock: Clock, on_rejected: Callable[[str], None] | None = None) -> None:
        self._db = db
        self._clock = clock
        self._on_rejected = on_rejected
        self._sent: dict[int, tuple[str, str]] = {}  # row id -> (agent name, wire id), while in flight
        self.rejected: Counter[str] = Counter()  # by reason, since start

    def sent(self, command_id: int, agent_name: str, wire_id: str) -> None:
        """The exec of `command_id` is going to `agent_name` as `wire_id` (called before the frame is written)."""
        self._sent[command_id] = (agent_name, wire_id)

    def forget(self, command_id: int) -> None:
        self._sent.pop(command_id, None)

    async def wire_id(self, command_id: int) -> str:
        """The id the exec of `command_id` carried (raises CommandNotFound)."""
        sent = self._sent.get(command_id)
        if sent is not None:
            return sent[1]
        command = await get_command(self._db, command_id)
        return wire_command_id(command.id, command.created_at)

    async def owns(self, agent_name: str, wire_id: str) -> int | None:
        """Whether `wire_id` names a command dispatched to `agent_name` (running there, or ended: a repeated result of
        its own is acknowledged as a duplicate, not refused). Returns its row id, or None. The whole wire id must
        match, so a result of another controller's command with the same row id is not taken for this one's."""
        command_id = row_id_of(wire_id)
        if command_id is None:
            return None
        if self._sent.get(command_id) == (agent_name, wire_id):
            return command_id
        try:
            command = await get_command(self._db, command_id)
        except CommandNotFound:
            return None
        expected = wire_command_id(command.id, command.created_at)
        if (
            command.agent_name != agent_name
            or command.dispatched_at is None
            or wire_id not in (expected, str(command.id))
        ):
            return None
        if command.status == CommandStatus.RUNNING:
            self._sent[command_id] = (agent_name, expected)  # sent before this controller restarted
        return command_id

    async def reject(self, agent_name: str, message_type: str, command_id: str, *, audited_so_far: int) -> bool:
        """Refuse one report; returns True when it was audited (the caller counts them per session)."""
        reason = f"{message_type}_not_yours"
        self.rejected[reason] += 1
        if self._on_rejected is not None:
            self._on_rejected(reason)
        log.warning(
            "agent.message_rejected",
            agent=agent_name,
            type=message_type,
            command_id=command_id[:40],
            reason="the command was not sent to this agent, or is not running there",
        )
        if audited_so_far >= AUDITED_PER_SESSION:
            return False
        try:
            await record(
                self._db,
                at=self._clock(),
                actor=f"agent:{agent_name}",
                action="agent.message_rejected",
                subject=f"command:{command_id[:40]}",
                data={"type": message_type, "reason": "not sent to this agent, or not running there"},
            )
        except (StorageUnavailable, AuditUnavailable) as exc:
            log.error("agent.message_rejected_not_audited", agent=agent_name, error=str(exc))
            return False
        return True
