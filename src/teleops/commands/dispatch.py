"""Record, then send: a command reaches an agent only after its dispatch is committed (at most once). The steps
that lead here are commands/submit.py; a command approved by a second person comes back through `dispatch_approved`.

Secrets in a command line (store/sealed_argv.py): what is recorded, audited, logged and shown is the redacted
argv; the agent receives the original, opened from the seal only to send it; the approval digest binds the
original, and the audit data carry its keyed hash (`argv_hmac`).
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from teleops.commands.authorize import authorize
from teleops.domain.command import CommandRecord, CommandStatus, Finish, NewCommand
from teleops.domain.policy import Decision
from teleops.store.approvals import approval_digest, claim_for_dispatch
from teleops.store.audit import AuditEvent, AuditUnavailable, record
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audited_dispatch import DispatchFacts, create_dispatched_audited, mark_dispatched_audited
from teleops.store.commands import create_command, finish_command, get_command
from teleops.store.database import Database, NotDurable, StorageUnavailable
from teleops.store.sealed_argv import OriginalCommand, SealUnreadable, original_command
from teleops.wire import Exec
from teleops.wire.command_ids import wire_command_id

__all__ = [
    "AgentUnavailable",
    "CommandRequest",
    "CommandSender",
    "StepUpCheck",
    "binding_key",
    "dispatch_approved",
    "dispatch_new",
    "effective_timeout",
    "fail_unsent",
    "record_audit",
    "record_denied",
    "send_dispatched",
    "write_checkpoint",
]

log = structlog.get_logger(__name__)

_AUDIT_FAILED = "not executed: audit unavailable; the audit record could not be written. Try again later"
NOT_DURABLE = "not executed: the database could not put the dispatch safely on disk (fsync failed). Check the disk"


class AgentUnavailable(Exception):
    """The exec was not sent: the agent has no live connection here."""


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
    platform: str | None = None  # where the request came from (approval outcomes are posted back there)
    chat_id: str | None = None


def effective_timeout(requested_s: float, decision: Decision) -> int:
    """Whole seconds, at least 1, and no more than the deciding rule's `max_timeout`."""
    timeout = max(1, math.ceil(requested_s))
    if decision.max_timeout_s is not None:
        timeout = max(1, min(timeout, math.floor(decision.max_timeout_s)))
    return timeout


async def record_denied(db: Database, facts: DispatchFacts, reason: str, *, now: datetime) -> CommandRecord:
    """Record a refused command as `denied` (with `reason`) and audit `command.denied`; nothing is sent."""
    record = await _record_ended(db, facts, Finish(CommandStatus.DENIED, reason=reason), now=now)
    log.info("command.denied", command_id=record.id, agent=facts.agent_name, rule=facts.audit_data.get("rule"))
    await record_audit(
        db, now=now, actor=facts.requester, action="command.denied", subject=f"command:{record.id}",
        data=facts.audit_data,
    )  # fmt: skip
    return record


async def _record_ended(db: Database, new: NewCommand, finish: Finish, *, now: datetime) -> CommandRecord:
    """Record a command that ends before it is sent (denied, or failed for want of an audit record)."""
    record = await create_command(
        db,
        requester=new.requester,
        host=new.host,
        agent_name=new.agent_name,
        argv=new.argv,
        timeout_s=new.timeout_s,
        now=now,
        incident_id=new.incident_id,
    )
    await finish_command(db, record.id, finish, now=now)
    return await get_command(db, record.id)


async def dispatch_approved(
    db: Database,
    sender: CommandSender,
    command_id: int,
    *,
    role: str | None,
    locked: bool,
    now: datetime,
    output_cap_bytes: int,
    checkpoints: CheckpointLog | None = None,
) -> CommandRecord:
    """Run a command whose approval is complete, re-checking everything that may have changed meanwhile (T23).

    Claims the approval once (a second call, an expired or a denied one runs nothing), then re-evaluates the
    policy for the requester's *current* `role` (None: the user is gone) and refuses when `locked` (their 2FA
    is locked) or the command row no longer matches the approved digest. A refusal ends the command `denied`
    and is audited; otherwise it is dispatched like any command (write-ahead audit, then send). Returns the
    command's record. Raises CommandNotFound.
    """
    record = await get_command(db, command_id)
    claimed = await claim_for_dispatch(db, command_id, now=now)
    if claimed is None:
        return record
    facts: dict[str, Any] = {
        "host": record.host, "agent": record.agent_name, "argv": record.argv, "approved_by": claimed.approved_by,
        "timeout_s": record.timeout_s,
    }  # fmt: skip
    unreadable: str | None = None
    try:  # the policy and the digest are checked against the original argv, which is what would run
        original = original_command(db.argv_vault, record.argv, record.sealed_argv, claimed.command_text)
    except SealUnreadable as exc:
        original, unreadable = OriginalCommand(record.argv, claimed.command_text), str(exc)
    if record.sealed_argv is not None and db.argv_vault is not None and unreadable is None:
        facts["argv_hmac"] = db.argv_vault.argv_hmac(original.argv)
    decision = authorize(record.requester, role, record.agent_name, original.argv, text=original.text)
    digest = approval_digest(
        agent=record.agent_name, argv=original.argv, requester=record.requester, command_id=record.id,
        timeout_s=record.timeout_s, key=binding_key(db),
    )  # fmt: skip
    refusal: str | None = None
    if unreadable is not None:
        refusal = f"not run: {unreadable}"
    elif not hmac.compare_digest(digest, claimed.digest):
        refusal = "not run: the command changed after it was approved (its argv, host or timeout no longer match)"
    elif not decision.allowed:
        refusal = f"not run: the policy changed after approval: {decision.reason}"
    elif locked:
        refusal = f"not run: {record.requester}'s 2FA was locked after approval; an admin must unlock it first"
    elif not sender.is_connected(record.agent_name):
        refusal = f"not run: agent {record.agent_name} is offline; ask for the command again once it is back"
    if refusal is not None:
        await finish_command(db, record.id, Finish(CommandStatus.DENIED, reason=refusal), now=now)
        await record_audit(
            db, now=now, actor=record.requester, action="command.denied", subject=f"command:{record.id}",
            data={**facts, "reason": refusal},
        )  # fmt: skip
        return await get_command(db, record.id)
    return await _dispatch(
        db, sender, record, now=now, facts=facts, checkpoints=checkpoints, output_cap_bytes=output_cap_bytes
    )


async def dispatch_new(
    db: Database,
    sender: CommandSender,
    facts: DispatchFacts,
    *,
    now: datetime,
    checkpoints: CheckpointLog | None,
    output_cap_bytes: int,
) -> CommandRecord:
    """Record, audit and mark dispatched in one commit, then send."""
    try:
        record, dispatching = await create_dispatched_audited(db, facts, now=now)
    except NotDurable as exc:
        # Recorded as `running` but maybe not on disk: it must not run, and must not stay `running` either.
        record = exc.applied[0]  # (record, event)
        log.error("command.dispatch_not_durable", command_id=record.id, agent=facts.agent_name, error=str(exc))
        return await fail_unsent(db, record, NOT_DURABLE, now=now)
    except (AuditUnavailable, StorageUnavailable) as exc:
        # No audit, no execution (T30). Nothing was written; record the command as failed so the person sees
        # why (if storage is down altogether this raises StorageUnavailable too and the caller answers 503).
        log.error("command.audit_failed", agent=facts.agent_name, requester=facts.requester, error=str(exc))
        return await _record_ended(db, facts, Finish(CommandStatus.FAILED, reason=_AUDIT_FAILED), now=now)
    return await _send(
        db, sender, record, dispatching, now=now, checkpoints=checkpoints, output_cap_bytes=output_cap_bytes
    )


async def _dispatch(
    db: Database,
    sender: CommandSender,
    record: CommandRecord,
    *,
    now: datetime,
    facts: Mapping[str, Any],
    checkpoints: CheckpointLog | None,
    output_cap_bytes: int,
) -> CommandRecord:
    """Mark an already recorded (approved) command dispatched with its audit event, then send."""
    try:
        dispatching = await mark_dispatched_audited(db, record.id, now=now, actor=record.requester, data=facts)
    except (AuditUnavailable, StorageUnavailable) as exc:
        # No audit, no execution (T30): the command is failed and the agent is never told about it.
        log.error("command.audit_failed", command_id=record.id, agent=record.agent_name, error=str(exc))
        await finish_command(db, record.id, Finish(CommandStatus.FAILED, reason=_AUDIT_FAILED), now=now)
        return await get_command(db, record.id)
    if dispatching is None:
        return await get_command(db, record.id)  # cancelled between record and dispatch
    running = replace(record, status=CommandStatus.RUNNING.value, dispatched_at=now)
    return await _send(
        db, sender, running, dispatching, now=now, checkpoints=checkpoints, output_cap_bytes=output_cap_bytes
    )


async def _send(
    db: Database,
    sender: CommandSender,
    record: CommandRecord,
    dispatching: AuditEvent,
    *,
    now: datetime,
    checkpoints: CheckpointLog | None,
    output_cap_bytes: int,
) -> CommandRecord:
    """Send the exec of a committed dispatch, then checkpoint the audit head; the command as it now stands."""
    record = await send_dispatched(db, sender, record, output_cap_bytes=output_cap_bytes, now=now)
    if checkpoints is not None:
        await write_checkpoint(checkpoints, dispatching)
    return record


async def send_dispatched(
    db: Database, sender: CommandSender, record: CommandRecord, *, output_cap_bytes: int, now: datetime
) -> CommandRecord:
    """Send the exec of a command whose dispatch is committed. If it cannot be sent the command ends `failed`
    saying so (when even that cannot be stored, it stays `running` and the hub's sweep ends it `lost`)."""
    bound = log.bind(command_id=record.id, agent=record.agent_name, requester=record.requester)
    try:  # the agent runs the original argv; only here is the seal opened for sending
        argv = original_command(db.argv_vault, record.argv, record.sealed_argv).argv
    except SealUnreadable as exc:
        bound.error("command.seal_unreadable", error=str(exc))
        return await fail_unsent(db, record, f"not run: {exc}", now=now)
    message = Exec(
        command_id=wire_command_id(record.id, record.created_at),
        argv=argv,
        timeout_s=record.timeout_s,
        output_cap_bytes=output_cap_bytes,
    )
    try:
        await sender.send_exec(record.agent_name, message)
    except AgentUnavailable as exc:
        bound.warning("command.not_sent", error=str(exc))
        reason = f"not run: agent {record.agent_name} went offline before the command was sent ({exc}); try again"
        return await fail_unsent(db, record, reason, now=now)
    bound.info("command.dispatched", argv0=record.argv[0])
    return record


async def fail_unsent(db: Database, record: CommandRecord, reason: str, *, now: datetime) -> CommandRecord:
    """End a command that was recorded `running` but never reached its agent as `failed` with `reason`. If even
    that cannot be stored it stays `running`; the agent reconnecting, or the sweep once the agent is gone, ends
    it `lost`."""
    try:
        await finish_command(db, record.id, Finish(CommandStatus.FAILED, reason=reason), now=now)
        return await get_command(db, record.id)
    except StorageUnavailable as exc:
        log.error("command.unsent_not_recorded", command_id=record.id, reason=reason, error=str(exc))
        return record


def binding_key(db: Database) -> bytes | None:
    """The key approvals are bound with: outside the database (store/approvals.py); None only without a vault."""
    return db.argv_vault.binding_key if db.argv_vault is not None else None


async def write_checkpoint(checkpoints: CheckpointLog, head: AuditEvent) -> None:
    """Anchor the audit chain head outside the database, off the event loop. Called after the send: the dispatch
    is already committed (write-ahead), and a missed checkpoint only widens the re-chain window."""
    try:
        await asyncio.to_thread(checkpoints.write, head.seq, head.hash)
    except OSError as exc:
        log.warning("audit.checkpoint_failed", seq=head.seq, error=str(exc))


async def record_audit(
    db: Database, *, now: datetime, actor: str, action: str, subject: str, data: Mapping[str, Any]
) -> None:
    """Best effort for refusals: the refusal stands even when its audit record cannot be written."""
    try:
        await record(db, at=now, actor=actor, action=action, subject=subject, data=data)
    except (AuditUnavailable, StorageUnavailable) as exc:
        log.error("command.audit_failed", subject=subject, action=action, error=str(exc))
