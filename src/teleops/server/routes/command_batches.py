"""Many commands at once: run one command on many hosts (`POST /api/v1/commands/batch`), and list or wait for
several commands (`GET /api/v1/commands?ids=…&wait=…`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from teleops.commands.backend.progress import Finished
from teleops.commands.command_line import CommandLineError
from teleops.commands.fanout import submit_fanout
from teleops.domain.command import TERMINAL, CommandRecord, CommandStatus
from teleops.domain.incident import IncidentNotFound
from teleops.server.auth import Caller, require_api_caller, services_of
from teleops.server.routes.commands import (
    CommandOut,
    read_access_of,
    request_as_caller,
    storage_unavailable,
)
from teleops.server.schemas import MAX_ROW_ID, RowIdField
from teleops.store.agents import list_agents
from teleops.store.audit import AuditUnavailable
from teleops.store.commands import get_commands, list_commands
from teleops.store.database import Database, StorageUnavailable

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])

MAX_HOSTS = 1000


class BatchCreate(BaseModel):
    hosts: list[Annotated[str, Field(max_length=255)]] = Field(
        min_length=1, max_length=MAX_HOSTS, description="Agent names, hostnames or `host` labels; each runs it once."
    )
    command: str = Field(max_length=4096, description="Split like a shell would (shlex); never run by a shell.")
    timeout: float | str | None = Field(None, description="Seconds, or a duration like 30s / 5m.")
    incident_id: RowIdField | None = Field(None, description="Attach every command to this incident's timeline.")


class BatchItem(BaseModel):
    host: str
    command: CommandOut | None = Field(None, description="The command on this host (running, failed or denied).")
    error: str | None = Field(None, description="Why nothing was recorded for this host.")


class BatchOut(BaseModel):
    items: list[BatchItem]


class CommandList(BaseModel):
    items: list[CommandOut]
    withheld: int = Field(
        0,
        description="How many of the newest commands were left out because the caller may not read them "
        '(docs/access-control.md, "Who may read a command").',
    )
    withheld_reason: str | None = Field(None, description="Why, when `withheld` is not 0.")


@router.post(
    "/batch",
    response_model=BatchOut,
    status_code=202,
    responses={503: {"description": "Storage unavailable (disk full, database gone): nothing was run; retry"}},
)
async def create_batch(
    body: BatchCreate, request: Request, caller: Annotated[Caller, Depends(require_api_caller)]
) -> Any:
    """Run one command on many hosts: one command per host, each authorized and audited on its own, all
    dispatched in one commit. Answers `{"items": [{"host", "command"?, "error"?}]}` in the order of `hosts`.
    Commands whose rule needs 2FA or a second person are not run from a batch (the item says so).
    Wait for them with `GET /api/v1/commands?ids=…&wait=…`."""
    services = services_of(request)
    hub = services.hub
    hosts = [host.strip() for host in body.hosts]
    if any(not host for host in hosts) or len(set(hosts)) != len(hosts):
        raise HTTPException(422, "hosts: every host must be non-empty and listed once")
    try:
        template = await request_as_caller(
            services, caller, host="", command=body.command, run_timeout=body.timeout, incident_id=body.incident_id
        )
        items = await submit_fanout(
            services.db,
            hub,
            await list_agents(services.db),
            template,
            hosts,
            now=services.clock(),
            checkpoints=services.checkpoints,
        )
    except CommandLineError as exc:
        raise HTTPException(422, f"command: {exc}") from exc
    except IncidentNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except (StorageUnavailable, AuditUnavailable) as exc:
        return storage_unavailable(exc)
    return BatchOut(
        items=[
            BatchItem(host=i.host, command=CommandOut.of(i.command) if i.command else None, error=i.error)
            for i in items
        ]
    )


@router.get("", response_model=CommandList)
async def list_or_wait(
    request: Request,
    caller: Annotated[Caller, Depends(require_api_caller)],
    ids: Annotated[
        str | None, Query(max_length=20_000, description=f"Comma-separated command ids (at most {MAX_HOSTS}).")
    ] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="With `ids`: seconds to wait for all of them to end.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Without `ids`: how many of the newest.")] = 100,
) -> CommandList:
    """The newest commands, or the commands `ids` (in that order), answered once all have ended or `wait`
    seconds passed, whichever comes first. Only commands the caller may read: the newest list leaves the others
    out (and counts them in `withheld`); an id among `ids` the caller may not read answers 404, as a missing one."""
    services = services_of(request)
    access = await read_access_of(services, caller.user)
    if ids is None:
        newest = await list_commands(services.db, limit=limit)
        decisions = await access.decide(newest)
        refused = [r for r in newest if not decisions[r.id].allowed]
        return CommandList(
            items=[CommandOut.of(r) for r in newest if decisions[r.id].allowed],
            withheld=len(refused),
            withheld_reason=_withheld_reason(access.reader.name, access.reader.role) if refused else None,
        )
    wanted = _parse_ids(ids)
    hub = services.hub if wait > 0 else None
    waiters = {i: hub.progress.waiter(i) for i in wanted} if hub is not None else {}  # before the read
    try:
        records = await get_commands(services.db, wanted)
        decisions = await access.decide(records)
        missing = sorted(set(wanted) - {r.id for r in records if decisions[r.id].allowed})
        if missing:
            raise HTTPException(404, f"no command {missing[0]}; check the ids returned by POST /api/v1/commands")
        open_ids = [r.id for r in records if CommandStatus(r.status) not in TERMINAL]
        if hub is not None and open_ids:
            records = await _wait_all(services.db, records, {i: waiters[i] for i in open_ids}, wait)
    finally:
        if hub is not None:
            for command_id in wanted:
                hub.progress.release(command_id)
    return CommandList(items=[CommandOut.of(r) for r in records])


def _withheld_reason(user: str, role: str | None) -> str:
    return (
        f'{user} (role "{role}") may read only the commands they asked for or voted on, and those on hosts their '
        "role's policy covers (admins read all); ask an admin to read the others"
    )


def _parse_ids(text: str) -> list[int]:
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise HTTPException(422, f"ids: expected comma-separated command ids, like 12,13,14 ({exc})") from exc
    if not wanted or len(wanted) > MAX_HOSTS or any(not 1 <= i <= MAX_ROW_ID for i in wanted):
        raise HTTPException(422, f"ids: between 1 and {MAX_HOSTS} command ids, each from 1 to {MAX_ROW_ID}")
    return list(dict.fromkeys(wanted))


async def _wait_all(
    db: Database, records: list[CommandRecord], open_waiters: dict[int, Finished], wait: float
) -> list[CommandRecord]:
    """`records` with each open one replaced by its final state, for those that end within `wait` seconds."""
    tasks = [asyncio.ensure_future(finished.event.wait()) for finished in open_waiters.values()]
    try:
        await asyncio.wait(tasks, timeout=wait)
    finally:
        for task in tasks:
            task.cancel()
    finals = {i: f.record for i, f in open_waiters.items() if f.record is not None}
    unread = [i for i in open_waiters if i not in finals]
    if unread:
        finals.update({r.id: r for r in await get_commands(db, unread)})
    return [finals.get(r.id, r) for r in records]
