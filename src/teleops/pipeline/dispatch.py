"""Record, then send: a command reaches an agent only after its dispatch is committed (at most once)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from teleops.pipeline.authorize import authorize
from teleops.pipeline.command_line import split_command
from teleops.pipeline.hosts import resolve_host
from teleops.store.agents import AgentRecord
from teleops.store.audit import AuditUnavailable, record
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audited_dispatch import mark_dispatched_audited
from teleops.store.commands import (
    CommandRecord,
    CommandStatus,
    Finish,
    create_command,
    finish_command,
    get_command,
)
from teleops.store.database import Database, StorageUnavailable
from teleops.wire import Exec

__all__ = [
    "AgentOffline",
    "AgentUnavailable",
    "CommandDenied",
    "CommandRequest",
    "CommandSender",
    "StepUpCheck",
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


class StepUpCheck(Protocol):
    """Whether a person's recent TOTP code still covers commands that need 2FA (TwoFactorStore implements it)."""

    async def elevated(self, user: str, *, now: datetime) -> bool: ...


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
    db: Database,
    sender: CommandSender,
    agents: Sequence[AgentRecord],
    request: CommandRequest,
    *,
    now: datetime,
    stepup: StepUpCheck | None = None,
    checkpoints: CheckpointLog | None = None,
) -> CommandRecord:
    """Parse, resolve, authorize, step-up, record, audit + mark dispatched (one commit), then send.

    Raises CommandLineError (bad text; nothing recorded), UnknownHost / AmbiguousHost, AgentOffline,
    IncidentNotFound, CommandDenied (recorded as denied and audited). A command whose rule needs a TOTP code
    is refused unless `stepup` says the person is elevated; one needing approval is refused (two-person approval
    is not built yet): both fail closed. If the `command.dispatching` audit record cannot be committed the
    command ends `failed` ("not executed: audit unavailable") and nothing is sent. If the send itself fails, the
    command ends `failed` with a reason saying it never reached the agent. `checkpoints` anchors the audit
    head outside the database after each dispatch.
    """
    argv = split_command(request.command)
    agent = resolve_host(request.host, agents)
    if not sender.is_connected(agent.name):
        seen = f"last seen {agent.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if agent.last_seen_at else "never seen"
        raise AgentOffline(
            f"agent {agent.name} for host {request.host!r} is offline ({seen}); nothing was run. "
            "Check that `teleops agent` is running on it and can reach this server."
        )
    decision = authorize(request.requester, request.role, agent.name, argv, text=request.command)
    timeout = max(1, math.ceil(request.timeout_s))
    if decision.max_timeout_s is not None:
        timeout = max(1, min(timeout, math.floor(decision.max_timeout_s)))
    refusal = None if decision.allowed else decision.reason
    if refusal is None and decision.require_approval:
        refusal = (
            f"{decision.reason}. Two-person approval is not available on this server yet, so it was not run; "
            "ask an admin to run it"
        )
    elif (
        refusal is None
        and decision.require_2fa
        and (stepup is None or not await stepup.elevated(request.requester, now=now))
    ):
        refusal = f"{decision.reason}. Send /otp CODE from your authenticator app, then run the command again"
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
    facts = {"host": request.host, "agent": agent.name, "argv": argv, "rule": decision.rule}
    if refusal is not None:
        await finish_command(db, record.id, Finish(CommandStatus.DENIED, reason=refusal), now=now)
        bound.info("command.denied", rule=decision.rule)
        await record_audit(
            db, now=now, actor=request.requester, action="command.denied", command_id=record.id, data=facts
        )
        raise CommandDenied(await get_command(db, record.id), refusal)
    try:
        dispatching = await mark_dispatched_audited(db, record.id, now=now, actor=request.requester, data=facts)
    except (AuditUnavailable, StorageUnavailable) as exc:
        # No audit, no execution (T30): the command is failed and the agent is never told about it.
        bound.error("command.audit_failed", error=str(exc))
        reason = "not executed: audit unavailable; the audit record could not be written. Try again later"
        await finish_command(db, record.id, Finish(CommandStatus.FAILED, reason=reason), now=now)
        return await get_command(db, record.id)
    if dispatching is None:
        return await get_command(db, record.id)  # cancelled between record and dispatch
    if checkpoints is not None:
        try:
            checkpoints.write(dispatching.seq, dispatching.hash)
        except OSError as exc:  # the DB record is committed; a missed checkpoint only widens the re-chain window
            bound.warning("audit.checkpoint_failed", error=str(exc))
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


async def record_audit(
    db: Database, *, now: datetime, actor: str, action: str, command_id: int, data: Mapping[str, Any]
) -> None:
    """Best effort for refusals: the refusal stands even when its audit record cannot be written."""
    try:
        await record(db, at=now, actor=actor, action=action, subject=f"command:{command_id}", data=data)
    except (AuditUnavailable, StorageUnavailable) as exc:
        log.error("command.audit_failed", command_id=command_id, action=action, error=str(exc))
