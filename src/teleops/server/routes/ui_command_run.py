"""Running a command from the web UI: the incident page's "Run a command on HOST" form and Run-again confirmations
both end here, through the same steps as chat and `POST /api/v1/commands` (commands/person.py).

Each Outcome (commands/outcome.py), as the REST API presents it: dispatched or waiting for a second person → the
command's page; refused by the policy → the reason (the refusal is recorded as a `denied` command, as everywhere);
needs a one-time code → a form that asks for it and sends the same command again with it (a wrong code says why);
not run at all (unknown or offline host, a line that cannot be split, storage down) → what happened and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from teleops.commands.dispatch import CommandRequest
from teleops.commands.outcome import AwaitingApproval, Denied, Dispatched, NeedsCode, NotRun, NotRunWhy
from teleops.commands.person import PersonOutcome, PushRefused, submit_for_person
from teleops.commands.run_offer import offers_commands_on
from teleops.commands.submit import resolve
from teleops.server.auth import services_of
from teleops.server.routes.commands import command_timeout
from teleops.server.routes.ui_common import UiUser, render_page
from teleops.server.services import Services
from teleops.store.agents import host_candidates
from teleops.store.audit import AuditUnavailable
from teleops.store.database import StorageUnavailable

__all__ = ["Retry", "RunOffer", "run_from_web", "run_offer"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Where the one-time-code form sends the same command again, and the hidden fields it carries."""

    action: str
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunOffer:
    """The incident page's Run form: the incident's host, the agent that serves it, and whether it is online."""

    host: str
    agent: str
    online: bool


async def run_offer(services: Services, user: UiUser, host: str | None) -> RunOffer | None:
    """The Run form for `host`, or None when no agent serves it or `user`'s policy covers it with no allow rule
    (commands/run_offer.py). Raises StorageUnavailable."""
    if not host or not user.role:
        return None
    agent = resolve(host, await host_candidates(services.db, host))
    if isinstance(agent, NotRun):
        return None
    if not offers_commands_on(user.role, agent.name):
        return None
    online = services.hub.is_connected(agent.name)
    return RunOffer(host=host, agent=agent.name, online=online)


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What was asked for, to show on the outcome page."""

    request: Request
    user: UiUser
    host: str
    text: str
    incident_id: int | None

    def page(
        self,
        status_code: int,
        error: str | None = None,
        *,
        ask_code: str | None = None,
        retry: Retry | None = None,
        refused_id: int | None = None,
    ) -> Response:
        return render_page(
            self.request, "command_run.html", user=self.user, status_code=status_code, host=self.host,
            text=self.text, incident_id=self.incident_id, error=error, ask_code=ask_code, retry=retry,
            refused_id=refused_id,
        )  # fmt: skip


async def run_from_web(
    request: Request,
    user: UiUser,
    *,
    host: str,
    text: str,
    incident_id: int | None,
    code: str | None,
    retry: Retry,
) -> Response:
    """Submit `text` on `host` as `user` and answer with the page for the outcome (see the module docstring)."""
    services = services_of(request)
    attempt = _Attempt(request, user, host, text, incident_id)
    if not user.role:
        raise HTTPException(403, f"{user.name} is no longer a TeleOps user; ask an admin")
    command_request = CommandRequest(
        requester=user.name,
        role=user.role,
        host=host,
        command=text,
        timeout_s=command_timeout(services, None),
        output_cap_bytes=services.settings.agents.output_cap_bytes,
        incident_id=incident_id,
    )
    try:
        outcome = await submit_for_person(services, services.hub, command_request, code=code, via=f"web:{user.name}")
    except (StorageUnavailable, AuditUnavailable) as exc:
        return attempt.page(
            503,
            f"Not run: storage unavailable ({exc}). Retry in a minute; if it persists, an admin checks the database.",
        )
    return _present(attempt, outcome, code=code, retry=retry)


def _present(attempt: _Attempt, outcome: PersonOutcome, *, code: str | None, retry: Retry) -> Response:
    """The page (or the redirect to the command) for what became of the command."""
    match outcome:
        case Dispatched(record) | AwaitingApproval(record=record):
            return RedirectResponse(f"/ui/commands/{record.id}", status_code=303)
        case PushRefused(reason, unavailable):
            return attempt.page(503 if unavailable else 403, f"Not run: {reason}.")
        case NotRun(reason, NotRunWhy.BAD_COMMAND_LINE):
            return attempt.page(422, f"Not run: the command line cannot be read ({reason}). Fix it and run it again.")
        case NotRun(reason, NotRunWhy.UNKNOWN_HOST | NotRunWhy.UNKNOWN_INCIDENT):
            return attempt.page(404, f"Not run: {reason}.")
        case NotRun(reason):  # an ambiguous host, an offline agent
            return attempt.page(409, f"Not run: {reason}")
        case Denied(reason, record):
            return attempt.page(403, f"Command refused: {reason}.", refused_id=record.id)
        case NeedsCode(reason=reason, refusal=refusal):
            if code is None and refusal:  # not enrolled, or locked: a code cannot help, so none is asked for
                return attempt.page(403, f"Not run: it needs a one-time code ({reason}), but {refusal}.")
            why = f"Code not accepted: {refusal}. Enter the code your app shows now." if refusal else None
            return attempt.page(401, why, ask_code=reason, retry=retry)
