"""A command from typed text to its agent, as an ordered list of small steps; each returns a value for the next
step or an Outcome (commands/outcome.py) that ends the run:

    parse → resolve the host → online → authorize → step-up → approval → audit + dispatch → send

`submit` runs them for one command; batches (commands/fanout.py) run `parse`, `resolve`, `online` and `decide`
per host and then record and send all allowed ones in one commit. Recording, the write-ahead audit and the send
are commands/dispatch.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from teleops.commands.authorize import authorize
from teleops.commands.command_line import CommandLineError, split_command
from teleops.commands.dispatch import (
    CommandRequest,
    CommandSender,
    StepUpCheck,
    binding_key,
    dispatch_new,
    effective_timeout,
    record_audit,
    record_denied,
)
from teleops.commands.hosts import AmbiguousHost, UnknownHost, resolve_host
from teleops.commands.outcome import AwaitingApproval, Denied, Dispatched, NeedsCode, NotRun, NotRunWhy, Outcome
from teleops.domain.incident import IncidentNotFound
from teleops.domain.policy import Decision
from teleops.store.agents import AgentRecord
from teleops.store.approvals import ApprovalRules, approval_digest, open_approval
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.audited_dispatch import DispatchFacts
from teleops.store.commands import create_command
from teleops.store.database import Database
from teleops.store.sealed_argv import ProtectedArgv, protect_argv

__all__ = ["Decided", "approved", "decide", "denied", "online", "parse", "resolve", "stepped_up", "submit"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Decided:
    """The policy's decision for one command on one agent, with what is recorded and audited about it."""

    argv: list[str]
    agent: AgentRecord
    decision: Decision
    protected: ProtectedArgv
    facts: DispatchFacts


def parse(text: str) -> list[str] | NotRun:
    """The argv of `text`, or NotRun saying how to fix the text."""
    try:
        return split_command(text)
    except CommandLineError as exc:
        return NotRun(str(exc), NotRunWhy.BAD_COMMAND_LINE)


def resolve(host: str, agents: Sequence[AgentRecord]) -> AgentRecord | NotRun:
    """The agent that serves `host`, or NotRun naming the known hosts (or the agents `host` matches)."""
    try:
        return resolve_host(host, agents)
    except UnknownHost as exc:
        return NotRun(str(exc), NotRunWhy.UNKNOWN_HOST)
    except AmbiguousHost as exc:
        return NotRun(str(exc), NotRunWhy.AMBIGUOUS_HOST)


def online(sender: CommandSender, agent: AgentRecord, host: str) -> NotRun | None:
    """NotRun when `agent` has no live connection here; None when it does."""
    if sender.is_connected(agent.name):
        return None
    seen = f"last seen {agent.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if agent.last_seen_at else "never seen"
    return NotRun(
        f"agent {agent.name} for host {host!r} is offline ({seen}); nothing was run. "
        "Check that `teleops agent` is running on it and can reach this server.",
        NotRunWhy.AGENT_OFFLINE,
    )


def decide(
    db: Database,
    request: CommandRequest,
    host: str,
    agent: AgentRecord,
    argv: list[str],
    *,
    extra_facts: dict[str, int] | None = None,
    keep_text: bool = True,
) -> Decided:
    """Authorize `argv` on `agent` for the requester, and protect its secrets for recording. `extra_facts` go
    into the audit data; `keep_text` lets the typed text decide which words are secrets (store/sealed_argv.py)."""
    decision = authorize(request.requester, request.role, agent.name, argv, text=request.command)
    protected = protect_argv(db.argv_vault, argv, request.command) if keep_text else protect_argv(db.argv_vault, argv)
    facts = {
        "host": host, "agent": agent.name, "argv": protected.shown, **protected.audit_fields(),
        "rule": decision.rule, **(extra_facts or {}),
    }  # fmt: skip
    one = DispatchFacts(
        requester=request.requester,
        host=host,
        agent_name=agent.name,
        argv=protected.shown,
        timeout_s=effective_timeout(request.timeout_s, decision),
        incident_id=request.incident_id,
        sealed_argv=protected.sealed,
        audit_data=facts,
    )
    return Decided(argv, agent, decision, protected, one)


async def denied(db: Database, decided: Decided, *, now: datetime) -> Denied | None:
    """Denied (recorded and audited) when the policy said no."""
    if decided.decision.allowed:
        return None
    reason = decided.decision.reason
    return Denied(reason, await record_denied(db, decided.facts, reason, now=now))


async def stepped_up(
    db: Database, request: CommandRequest, decided: Decided, stepup: StepUpCheck | None, *, now: datetime
) -> NeedsCode | None:
    """NeedsCode (audited `command.stepup_required`, nothing recorded) when the rule needs a one-time code and
    `stepup` does not say the person is elevated."""
    if not decided.decision.require_2fa or (stepup is not None and await stepup.elevated(request.requester, now=now)):
        return None
    await record_audit(
        db, now=now, actor=request.requester, action="command.stepup_required", subject="",
        data=decided.facts.audit_data,
    )  # fmt: skip
    return NeedsCode(
        decided.decision.reason,
        agent=decided.agent.name,
        argv=tuple(decided.argv),
        shown=decided.protected.shown_text or request.command,
        refusal=getattr(stepup, "refusal", None),
    )


async def approved(
    db: Database, request: CommandRequest, decided: Decided, approval: ApprovalRules | None, *, now: datetime
) -> AwaitingApproval | Denied | None:
    """None when the rule needs no second person. Otherwise the command is recorded `queued` with an approval
    request (AwaitingApproval); without approval rules here it is refused (Denied)."""
    decision, one = decided.decision, decided.facts
    if not decision.require_approval:
        return None
    if approval is None:
        refusal = (
            f"{decision.reason}. Two-person approval is not available here, so it was not run; ask an admin to run it"
        )
        return Denied(refusal, await record_denied(db, one, refusal, now=now))
    record = await create_command(
        db, requester=one.requester, host=one.host, agent_name=one.agent_name, argv=one.argv,
        timeout_s=one.timeout_s, now=now, incident_id=one.incident_id, sealed_argv=one.sealed_argv,
    )  # fmt: skip
    opened = await open_approval(
        db,
        command_id=record.id,
        # The digest binds the original argv (what will run), not the shown one.
        digest=approval_digest(
            agent=one.agent_name,
            argv=decided.argv,
            requester=request.requester,
            command_id=record.id,
            timeout_s=record.timeout_s,
            key=binding_key(db),
        ),
        requester=request.requester,
        command_text=decided.protected.shown_text or request.command,
        rules=approval,
        now=now,
        platform=request.platform,
        chat_id=request.chat_id,
        facts={**one.audit_data, "timeout_s": record.timeout_s},  # what `teleops audit verify` holds it against
    )
    log.info("command.awaiting_approval", command_id=record.id, agent=one.agent_name, needed=approval.needed)
    return AwaitingApproval(decision.reason, record, opened)


async def submit(
    db: Database,
    sender: CommandSender,
    agents: Sequence[AgentRecord],
    request: CommandRequest,
    *,
    now: datetime,
    stepup: StepUpCheck | None = None,
    checkpoints: CheckpointLog | None = None,
    approval: ApprovalRules | None = None,
) -> Outcome:
    """Run the steps for `request`; the first that returns an Outcome ends the run.

    A command whose rule needs a TOTP code is NeedsCode unless `stepup` says the person is elevated (nothing
    recorded; audited as `command.stepup_required`). One whose rule needs a second person is recorded `queued`
    with an approval request (audited `approval.requested`): AwaitingApproval; without `approval` rules it is
    Denied. Step-up comes first: a command needing both asks for the code before it asks anyone to approve it.
    If the `command.dispatching` audit record cannot be committed the command ends `failed` ("not executed:
    audit unavailable") and nothing is sent; if the send fails, it ends `failed` saying it never reached the
    agent — both Dispatched, with that record. `checkpoints` anchors the audit head outside the database.
    Raises StorageUnavailable and AuditUnavailable only when even that cannot be written.
    """
    try:
        if isinstance(argv := parse(request.command), NotRun):
            return argv
        if isinstance(agent := resolve(request.host, agents), NotRun):
            return agent
        if offline := online(sender, agent, request.host):
            return offline
        decided = decide(db, request, request.host, agent, argv)
        if refused := await denied(db, decided, now=now):
            return refused
        if needs_code := await stepped_up(db, request, decided, stepup, now=now):
            return needs_code
        if waiting := await approved(db, request, decided, approval, now=now):
            return waiting
        record = await dispatch_new(
            db, sender, decided.facts, now=now, checkpoints=checkpoints, output_cap_bytes=request.output_cap_bytes
        )
        return Dispatched(record)
    except IncidentNotFound as exc:
        return NotRun(str(exc), NotRunWhy.UNKNOWN_INCIDENT)
