"""A person's command through the whole pipeline, and cancelling one: what the REST API and the web UI share.

`submit_for_person` is `POST /api/v1/commands` and the web UI's Run / Run-again forms alike: the host's agents,
the policy (default deny), step-up (a code from the request, an elevation from an earlier code, or a Duo push for
people who step up with Duo), two-person approval, the write-ahead audit, then the send. `cancel_command` is
`POST /api/v1/commands/{id}/cancel` and the web UI's Cancel button: only who asked for it or an admin.
"""

from __future__ import annotations

from teleops.pipeline.dispatch import AgentUnavailable, CommandRequest, StepUpRequired, submit_command
from teleops.pipeline.duo import PushAlreadyPending, PushOutcome
from teleops.pipeline.read_access import ADMIN_ROLE
from teleops.pipeline.stepup import CodeGate
from teleops.server.agent_hub import AgentHub
from teleops.server.services import Services
from teleops.store.agents import host_candidates
from teleops.store.commands import TERMINAL, CommandRecord, CommandStatus, Finish, finish_command, get_command

__all__ = ["CancelRefused", "PushRefused", "cancel_command", "may_cancel", "submit_for_person"]


class PushRefused(Exception):
    """The Duo push was denied, not answered, already waiting, or Duo is unreachable (`status` 503): not run."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


async def submit_for_person(
    services: Services, hub: AgentHub, request: CommandRequest, *, code: str | None, via: str
) -> CommandRecord:
    """Submit `request` as its requester (pipeline/dispatch.py `submit_command`), with `code` (a one-time code the
    person typed, or None) as the step-up. Someone who steps up with Duo and sent no code gets a push first, and
    the command runs once they approve it.

    Raises what `submit_command` raises (CommandLineError, UnknownHost, AmbiguousHost, AgentOffline,
    IncidentNotFound, CommandDenied, StepUpRequired — its `refusal` says why a code did not count —,
    ApprovalPending, StorageUnavailable, AuditUnavailable), and PushRefused.
    """
    gate = CodeGate(services.stepup, code, via=via, push=services.duo) if services.stepup is not None else None

    async def submit() -> CommandRecord:
        return await submit_command(
            services.db,
            hub,
            await host_candidates(services.db, request.host),
            request,
            now=services.clock(),
            stepup=gate,
            checkpoints=services.checkpoints,
            approval=services.approvals.rules if services.approvals is not None else None,
        )

    try:
        return await submit()
    except StepUpRequired as exc:
        duo = services.duo
        if code is not None or duo is None or not duo.applies_to(request.requester):
            raise
        try:
            push = duo.reserve(request.requester, command=request.command, host=exc.agent)
        except PushAlreadyPending as refused:
            raise PushRefused(f"command refused: {refused}", 403) from refused
        result = await duo.push(push, via=via)
        if not result.approved:
            raise PushRefused(
                f"command refused: {result.message}", 503 if result.outcome is PushOutcome.UNAVAILABLE else 403
            ) from exc
        return await submit()


class CancelRefused(Exception):
    """Not cancelled; `status` is the HTTP status that says why (403 not yours, 409 ended or unreachable, 503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def may_cancel(record: CommandRecord, user: str, role: str | None) -> bool:
    """Whether `user` (holding `role`) may cancel `record`: who asked for it, or an admin; only while it runs or
    waits. `cancel_command` applies it for the REST API and the web UI; chat `/cancel` (chat/commands.py) has its
    own copy of the same rule."""
    return CommandStatus(record.status) not in TERMINAL and (record.requester == user or role == ADMIN_ROLE)


async def cancel_command(services: Services, record: CommandRecord, *, user: str, role: str | None) -> CommandRecord:
    """Cancel `record` for `user`: a queued one ends `killed` here, a running one gets a cancel sent to its agent
    (it ends `killed` when the agent reports). Returns the command as it now stands. The caller has checked that
    `user` may read it. Raises CancelRefused, StorageUnavailable."""
    command_id = record.id
    if record.requester != user and role != ADMIN_ROLE:
        raise CancelRefused(
            403, f"command {command_id} was requested by {record.requester}; only they or an admin may cancel it"
        )
    if CommandStatus(record.status) in TERMINAL:
        raise CancelRefused(409, f"command {command_id} already ended ({record.status}); nothing to cancel")
    if record.status == CommandStatus.QUEUED:
        reason = f"cancelled by {user} before it was sent"
        await finish_command(services.db, command_id, Finish(CommandStatus.KILLED, reason=reason), now=services.clock())
    elif services.hub is None:
        raise CancelRefused(503, "the agent hub is not running; restart the controller")
    else:
        try:
            await services.hub.send_cancel(record.agent_name, command_id)
        except AgentUnavailable as exc:
            raise CancelRefused(
                409,
                f"cannot cancel now: agent {record.agent_name} is offline ({exc}); the command stops at its "
                f"{record.timeout_s}s timeout and its result is reported when the agent reconnects",
            ) from exc
    return await get_command(services.db, command_id)
