"""A person's command through all the steps, and cancelling one: what the REST API and the web UI share.

`submit_for_person` is `POST /api/v1/commands` and the web UI's Run / Run-again forms alike: the host's agents,
the policy (default deny), step-up (a code from the request, an elevation from an earlier code, or a Duo push for
people who step up with Duo), two-person approval, the write-ahead audit, then the send. `cancel_command` is
`POST /api/v1/commands/{id}/cancel` and the web UI's Cancel button: only who asked for it or an admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from teleops.commands.approval import ApprovalDesk
from teleops.commands.backend.agent_hub import AgentHub
from teleops.commands.dispatch import AgentUnavailable, CommandRequest
from teleops.commands.duo import DuoPushes, PushAlreadyPending, PushOutcome
from teleops.commands.outcome import NeedsCode, Outcome
from teleops.commands.read_access import ADMIN_ROLE
from teleops.commands.stepup import CodeGate
from teleops.commands.submit import submit
from teleops.domain.clock import Clock
from teleops.domain.command import TERMINAL, CommandRecord, CommandStatus, Finish
from teleops.store.agents import host_candidates
from teleops.store.audit_checkpoints import CheckpointLog
from teleops.store.commands import finish_command, get_command
from teleops.store.database import Database
from teleops.store.twofactor import TwoFactorStore

__all__ = [
    "CancelRefused",
    "CommandServices",
    "PersonOutcome",
    "PushRefused",
    "cancel_command",
    "may_cancel",
    "submit_for_person",
]


class CommandServices(Protocol):
    """What submitting and cancelling a person's command need of the controller (server/services.py `Services`)."""

    @property
    def db(self) -> Database: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def hub(self) -> AgentHub: ...
    @property
    def stepup(self) -> TwoFactorStore: ...
    @property
    def duo(self) -> DuoPushes | None: ...
    @property
    def checkpoints(self) -> CheckpointLog: ...
    @property
    def approvals(self) -> ApprovalDesk: ...


@dataclass(frozen=True, slots=True)
class PushRefused:
    """The Duo push was denied, not answered, already waiting (refused), or Duo is unreachable (`unavailable`):
    nothing was run."""

    reason: str
    unavailable: bool = False


PersonOutcome = Outcome | PushRefused


async def submit_for_person(
    services: CommandServices, hub: AgentHub, request: CommandRequest, *, code: str | None, via: str
) -> PersonOutcome:
    """Submit `request` as its requester (commands/submit.py `submit`), with `code` (a one-time code the person
    typed, or None) as the step-up. Someone who steps up with Duo and sent no code gets a push first, and the
    command runs once they approve it (PushRefused when they do not). NeedsCode's `refusal` says why a code did
    not count. Raises StorageUnavailable, AuditUnavailable.
    """
    gate = CodeGate(services.stepup, code, via=via, push=services.duo)

    async def run() -> Outcome:
        return await submit(
            services.db,
            hub,
            await host_candidates(services.db, request.host),
            request,
            now=services.clock(),
            stepup=gate,
            checkpoints=services.checkpoints,
            approval=services.approvals.rules,
        )

    outcome = await run()
    duo = services.duo
    if not isinstance(outcome, NeedsCode) or code is not None or duo is None or not duo.applies_to(request.requester):
        return outcome
    try:
        push = await duo.reserve(request.requester, command=request.command, host=outcome.agent)
    except PushAlreadyPending as refused:
        return PushRefused(f"command refused: {refused}")
    result = await duo.push(push, via=via)
    if not result.approved:
        return PushRefused(f"command refused: {result.message}", unavailable=result.outcome is PushOutcome.UNAVAILABLE)
    return await run()


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


async def cancel_command(
    services: CommandServices, record: CommandRecord, *, user: str, role: str | None
) -> CommandRecord:
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
