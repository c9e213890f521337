"""Commands: run one on a host (`POST /api/v1/commands`), read it, cancel it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from teleops.commands.approval import Vote
from teleops.commands.dispatch import CommandRequest
from teleops.commands.outcome import AwaitingApproval, Denied, Dispatched, NeedsCode, NotRun, NotRunWhy
from teleops.commands.person import CancelRefused, PersonOutcome, PushRefused, cancel_command, submit_for_person
from teleops.commands.read_access import ReadAccess, reader_named
from teleops.commands.stepup import OTP_HEADER
from teleops.config.settings import parse_duration
from teleops.domain.command import TERMINAL, CommandNotFound, CommandRecord, CommandStatus
from teleops.server.auth import Caller, require_api_caller, services_of
from teleops.server.schemas import RowId, RowIdField
from teleops.server.services import Services
from teleops.store.approvals import get_approval
from teleops.store.audit import AuditUnavailable
from teleops.store.commands import get_command
from teleops.store.database import StorageUnavailable

__all__ = [
    "CommandCreate",
    "CommandOut",
    "command_timeout",
    "read_access_of",
    "readable_command",
    "request_as_caller",
    "router",
    "storage_unavailable",
]

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/commands", tags=["commands"])


class CommandCreate(BaseModel):
    host: str = Field(min_length=1, max_length=255, description="Agent name, hostname, or `host` label.")
    command: str = Field(max_length=4096, description="Split like a shell would (shlex); never run by a shell.")
    timeout: float | str | None = Field(None, description="Seconds, or a duration like 30s / 5m.")
    incident_id: RowIdField | None = Field(None, description="Attach to this incident's timeline.")


class CommandOut(BaseModel):
    id: int
    status: str
    exit_code: int | None
    signal: int | None
    output: str
    truncated: bool
    output_bytes: int
    host: str
    agent: str
    argv: list[str]
    requester: str
    incident_id: int | None
    timeout_s: int
    reason: str | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None

    @classmethod
    def of(cls, r: CommandRecord) -> CommandOut:
        return cls(
            id=r.id,
            status=r.status,
            exit_code=r.exit_code,
            signal=r.signal,
            output=r.output,
            truncated=r.truncated,
            output_bytes=r.output_bytes,
            host=r.host,
            agent=r.agent_name,
            argv=r.argv,
            requester=r.requester,
            incident_id=r.incident_id,
            timeout_s=r.timeout_s,
            reason=r.reason,
            created_at=r.created_at,
            dispatched_at=r.dispatched_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            duration_s=r.duration_s,
        )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "Not allowed for this user (recorded as denied), needs a one-time code (`needs: otp`), or "
        "the Duo push was denied, timed out or is already waiting (`needs: duo`)"
    },
    404: {"description": "Unknown host (the message lists the known hosts) or incident"},
    409: {"description": "The host's agent is offline, or the host name is ambiguous"},
    503: {
        "description": "Storage is unavailable (disk full, database gone) or the MFA provider (Duo) is "
        "unreachable: not executed (fail closed); retry after `Retry-After` seconds"
    },
    422: {"description": "Empty command, unbalanced quotes, or a bad timeout"},
}


async def request_as_caller(
    services: Services,
    caller: Caller,
    *,
    host: str,
    command: str,
    run_timeout: float | str | None,
    incident_id: int | None,
) -> CommandRequest:
    """The command as the API token's user, under that user's current role. 403 when the user is gone, 422 for
    a bad timeout."""
    user = await services.users.get(caller.user)
    if user is None:
        raise HTTPException(403, f"user {caller.user!r} no longer exists; ask an admin")
    return CommandRequest(
        requester=caller.user,
        role=user.role,
        host=host,
        command=command,
        timeout_s=command_timeout(services, run_timeout),
        output_cap_bytes=services.settings.agents.output_cap_bytes,
        incident_id=incident_id,
    )


async def read_access_of(services: Services, user: str) -> ReadAccess:
    """Who may read which command, for the API token's (or web session's) user with their current role."""
    return ReadAccess(services.db, await reader_named(services.users, user))


async def readable_command(services: Services, user: str, command_id: int) -> CommandRecord:
    """The command if `user` may read it; 404 — as for a command that does not exist — when it does not exist or
    they may not read it (commands/read_access.py), so an id never confirms that someone else's command exists."""
    try:
        record = await get_command(services.db, command_id)
    except CommandNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    access = await read_access_of(services, user)
    if not (await access.decide([record]))[record.id].allowed:
        raise HTTPException(404, str(CommandNotFound(command_id)))
    return record


def storage_unavailable(exc: Exception) -> JSONResponse:
    """503 for a command that could not be recorded or audited (disk full, database gone): it was not run."""
    log.warning("commands.storage_unavailable", error=str(exc))
    return JSONResponse(
        {"detail": f"storage unavailable ({exc}); the command was not run. Retry in a minute; if it persists, "
         "check the database's disk space and that it is reachable"},
        status_code=503,
        headers={"Retry-After": "5"},
    )  # fmt: skip


def command_timeout(services: Services, value: float | str | None) -> float:
    agents = services.settings.agents
    limit = agents.max_timeout.seconds
    if value is None:
        return min(agents.default_timeout.seconds, limit)
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise HTTPException(422, f"timeout: {exc}") from exc
    if not 0 < seconds <= limit:
        raise HTTPException(422, f"timeout: must be between 1s and {agents.max_timeout} (agents.max_timeout)")
    return seconds


@router.post("", response_model=CommandOut, status_code=202, responses=_RESPONSES)
async def create(
    body: CommandCreate,
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
    otp: Annotated[
        str | None,
        Header(
            alias=OTP_HEADER,
            max_length=16,
            description="A one-time code from the caller's authenticator, for commands whose rule needs 2FA.",
        ),
    ] = None,
) -> Any:
    """Run a command. One whose rule needs 2FA answers 403 unless the caller is elevated (a code accepted in the
    last `twofactor.elevation`) or sends a fresh code in `X-TeleOps-OTP`. One that needs a second person answers
    202 with status `queued` and an `approval` object: another user approves it (`POST …/{id}/approve`).
    For a user who steps up with Duo (and sent no code) the request waits for the push on their phone, then runs;
    a denied or unanswered push answers 403, an unreachable Duo 503 (nothing runs)."""
    services = services_of(request)
    hub = services.hub
    try:
        command_request = await request_as_caller(
            services, caller, host=body.host, command=body.command, run_timeout=body.timeout,
            incident_id=body.incident_id,
        )  # fmt: skip
    except StorageUnavailable as exc:
        return storage_unavailable(exc)
    via = f"api:{caller.user}"
    try:
        outcome = await submit_for_person(services, hub, command_request, code=otp, via=via)
    except (StorageUnavailable, AuditUnavailable) as exc:
        return storage_unavailable(exc)
    return _present(outcome, otp=otp)


_NOT_RUN_STATUS = {
    NotRunWhy.BAD_COMMAND_LINE: 422,
    NotRunWhy.UNKNOWN_HOST: 404,
    NotRunWhy.UNKNOWN_INCIDENT: 404,
    NotRunWhy.AMBIGUOUS_HOST: 409,
    NotRunWhy.AGENT_OFFLINE: 409,
}


def _present(outcome: PersonOutcome, *, otp: str | None) -> Any:
    """The HTTP answer for what became of the command."""
    match outcome:
        case Dispatched(record):
            return CommandOut.of(record)
        case PushRefused(reason, unavailable):
            return JSONResponse({"detail": reason, "needs": "duo"}, status_code=503 if unavailable else 403)
        case NotRun(reason, why):
            detail = f"command: {reason}" if why is NotRunWhy.BAD_COMMAND_LINE else reason
            raise HTTPException(_NOT_RUN_STATUS[why], detail)
        case Denied(reason, record):
            return JSONResponse(
                {"detail": f"command refused: {reason}", "id": record.id, "status": record.status}, status_code=403
            )
        case NeedsCode(reason=reason, refusal=why):
            detail = (
                f"command needs a one-time code: {reason}. Code not accepted: {why}"
                if otp is not None and why
                else f"command needs a one-time code: {reason}. "
                + (f"{why}. " if why else "")
                + f"Repeat the request with the header `{OTP_HEADER}: CODE` from your authenticator app"
            )
            return JSONResponse({"detail": detail, "needs": "otp"}, status_code=403)
        case AwaitingApproval(reason, record, approval):
            body_out = CommandOut.of(record).model_dump(mode="json")
            body_out["approval"] = {
                "status": approval.status.value,
                "digest": approval.digest,
                "needed": approval.needed,
                "expires_at": approval.expires_at.isoformat(),
                "detail": f"{reason}; another user allowed to run it approves: "
                f"POST /api/v1/commands/{record.id}/approve",
            }
            return JSONResponse(body_out, status_code=202)


class VoteOut(BaseModel):
    id: int
    counted: bool
    detail: str
    status: str
    approval: str | None


async def _vote(services: Services, command_id: int, user: str, vote: Vote) -> VoteOut:
    text = await services.approvals.vote(command_id, voter=user, vote=vote)  # audited, counted or not
    # Whoever may not read the command cannot count as a voter (a voter's own policy must allow the command on its
    # host, which lets them read it); their refusal would quote the command, so they get the 404 of a missing one.
    status = (await readable_command(services, user, command_id)).status
    approval = await get_approval(services.db, command_id)
    counted = not text.startswith("Not counted")
    out = VoteOut(
        id=command_id, counted=counted, detail=text, status=status, approval=approval.status if approval else None
    )
    if not counted:
        raise HTTPException(404 if approval is None else 409, text)
    return out


_VOTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such command, one the caller may not read, or it never needed approval"},
    409: {"description": "Not counted: own request, not allowed to run it, already decided, or expired"},
}


@router.post("/{command_id}/approve", response_model=VoteOut, responses=_VOTE_RESPONSES)
async def approve(
    command_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> VoteOut:
    """Approve another user's command that waits for a second person (you must be allowed to run it yourself)."""
    return await _vote(services_of(request), command_id, caller.user, Vote.APPROVE)


@router.post("/{command_id}/deny", response_model=VoteOut, responses=_VOTE_RESPONSES)
async def deny(command_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]) -> VoteOut:
    """Deny another user's command that waits for a second person: one deny stops it."""
    return await _vote(services_of(request), command_id, caller.user, Vote.DENY)


@router.get(
    "/{command_id}",
    response_model=CommandOut,
    responses={
        404: {"description": "No such command, or one the caller may not read (who may: docs/access-control.md)"}
    },
)
async def read(
    command_id: RowId,
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
    wait: Annotated[
        float, Query(ge=0, le=60, description="Seconds to wait for the command to end before answering.")
    ] = 0,
) -> CommandOut:
    """The command with its output, if the caller may read it: they asked for it, voted on its approval, hold
    admin, or their role's policy covers its host. Anyone else gets 404, as for a command that does not exist."""
    services = services_of(request)
    await readable_command(services, caller.user, command_id)  # before waiting: a refusal is not held up
    try:
        hub = services.hub if wait > 0 else None
        finished = hub.progress.waiter(command_id) if hub is not None else None  # before the read: no lost wake-up
        try:
            record = await get_command(services.db, command_id)
            if hub is not None and finished is not None and CommandStatus(record.status) not in TERMINAL:
                final = await hub.progress.wait(finished, wait)
                record = final if final is not None else await get_command(services.db, command_id)
        finally:
            if hub is not None:
                hub.progress.release(command_id)
    except CommandNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return CommandOut.of(record)


@router.post(
    "/{command_id}/cancel",
    response_model=CommandOut,
    status_code=202,
    responses={
        403: {"description": "Not yours"},
        404: {"description": "No such command, or one the caller may not read"},
        409: {"description": "Finished or unreachable"},
    },
)
async def cancel(
    command_id: RowId, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> CommandOut:
    services = services_of(request)
    record = await readable_command(services, caller.user, command_id)
    user = await services.users.get(caller.user)
    try:
        return CommandOut.of(
            await cancel_command(services, record, user=caller.user, role=user.role if user is not None else None)
        )
    except CancelRefused as exc:
        raise HTTPException(exc.status, exc.detail) from exc
