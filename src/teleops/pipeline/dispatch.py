"""Record, then send: a command reaches an agent only after its dispatch is committed (at most once)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from teleops.pipeline.authorize import authorize
from teleops.pipeline.command_line import split_command
from teleops.pipeline.hosts import resolve_host
from teleops.store.agents import AgentRecord
from teleops.store.commands import (
    CommandRecord,
    CommandStatus,
    Finish,
    create_command,
    finish_command,
    get_command,
    mark_dispatched,
)
from teleops.store.database import Database
from teleops.wire import Exec

__all__ = [
    "AgentOffline",
    "AgentUnavailable",
    "CommandDenied",
    "CommandRequest",
    "CommandSender",
    "submit_command",
]

log = structlog.get_logger(__name__)


class AgentUnavailable(Exception):
    """The exec was not sent: the agent has no live connection here."""


class AgentOffline(Exception):
    """The host's agent is not connected; nothing was recorded or run."""


class CommandDenied(Exception):
    """Authorization said no; the command is recorded as `denied` (`record`) and was not sent."""

    def __init__(self, record: CommandRecord, reason: str) -> None:
        super().__init__(reason)
        self.record = record


class CommandSender(Protocol):
    """Delivers an exec to a connected agent. The agent hub implements it."""

    def is_connected(self, agent_name: str) -> bool: ...

    async def send_exec(self, agent_name: str, message: Exec) -> None:
        """Raises AgentUnavailable when it could not be sent."""
        ...


@dataclass(frozen=True, slots=True)
class CommandRequest:
    requester: str
    role: str
    host: str
    command: str
    timeout_s: float
    output_cap_bytes: int
    incident_id: int | None = None


async def submit_command(
    db: Database, sender: CommandSender, agents: Sequence[AgentRecord], request: CommandRequest, *, now: datetime
) -> CommandRecord:
    """Parse, resolve, authorize, record, mark dispatched (committed), then send.

    Raises CommandLineError (bad text; nothing recorded), UnknownHost / AmbiguousHost, AgentOffline,
    IncidentNotFound, CommandDenied (recorded as denied). If the send itself fails, the command ends
    `failed` with a reason saying it never reached the agent.
    """
    argv = split_command(request.command)
    agent = resolve_host(request.host, agents)
    if not sender.is_connected(agent.name):
        seen = f"last seen {agent.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if agent.last_seen_at else "never seen"
        raise AgentOffline(
            f"agent {agent.name} for host {request.host!r} is offline ({seen}); nothing was run. "
            "Check that `teleops agent` is running on it and can reach this server."
        )
    timeout = max(1, math.ceil(request.timeout_s))
    decision = authorize(request.requester, request.role, agent.name, argv)
    record = await create_command(
        db,
        requester=request.requester,
        host=request.host,
        agent_name=agent.name,
        argv=argv,
        timeout_s=timeout,
        now=now,
        incident_id=request.incident_id,
    )
    bound = log.bind(command_id=record.id, agent=agent.name, requester=request.requester)
    if not decision.allowed:
        await finish_command(db, record.id, Finish(CommandStatus.DENIED, reason=decision.reason), now=now)
        bound.info("command.denied", rule=decision.rule)
        raise CommandDenied(await get_command(db, record.id), decision.reason)
    if not await mark_dispatched(db, record.id, now=now):
        return await get_command(db, record.id)  # cancelled between record and dispatch
    message = Exec(
        command_id=str(record.id),
        argv=argv,
        timeout_s=timeout,
        output_cap_bytes=request.output_cap_bytes,
    )
    try:
        await sender.send_exec(agent.name, message)
    except AgentUnavailable as exc:
        reason = f"not run: agent {agent.name} went offline before the command was sent ({exc}); try again"
        await finish_command(db, record.id, Finish(CommandStatus.FAILED, reason=reason), now=now)
        bound.warning("command.not_sent", error=str(exc))
    else:
        bound.info("command.dispatched", argv0=argv[0])
    return await get_command(db, record.id)
