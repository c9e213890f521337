"""First response: a new incident's runbook diagnostics marked `auto: true` run on arrival, before anyone acts.

They run through the same command pipeline as a person's command, as the system principal
`teleops-firstresponse` under `memory.first_response_role` — so the policy decides here too, and a denied or
unavailable diagnostic is recorded, never forced. Each command carries the incident id, so its output lands on
the incident's timeline. Only diagnostics can be `auto` (runbooks.py refuses `auto` on a fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from teleops.commands.dispatch import CommandRequest, CommandSender
from teleops.commands.outcome import AwaitingApproval, Denied, Dispatched, NeedsCode, NotRun
from teleops.commands.submit import submit
from teleops.domain.incident import IncidentNotFound, TimelineKind
from teleops.memory.runbooks import bind
from teleops.memory.service import FIRST_RESPONSE_PRINCIPAL, ScenarioMemory
from teleops.store.agents import host_candidates
from teleops.store.incidents import add_timeline_event, get_incident
from teleops.store.ingest import IncidentChange, Outcome

__all__ = ["FirstResponder"]

log = structlog.get_logger(__name__)


class FirstResponder:
    def __init__(
        self,
        memory: ScenarioMemory,
        *,
        role: str,
        sender: Callable[[], CommandSender | None],
        clock: Callable[[], datetime],
        timeout_s: float,
        output_cap_bytes: int,
    ) -> None:
        self._memory = memory
        self._role = role
        self._sender = sender
        self._clock = clock
        self._timeout_s = timeout_s
        self._cap = output_cap_bytes
        self._tasks: set[asyncio.Task[None]] = set()

    def after_ingest(self, changes: Sequence[IncidentChange]) -> None:
        """After the ingest commit: start the diagnostics of each new incident that has a runbook."""
        for change in changes:
            if change.outcome is Outcome.CREATED and change.alert.name in self._memory.runbooks:
                task = asyncio.create_task(
                    self._respond(change.incident_id), name=f"first-response-{change.incident_id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _respond(self, incident_id: int) -> None:
        db = self._memory.db
        try:
            incident = await get_incident(db, incident_id)
        except IncidentNotFound:
            return
        runbook = self._memory.runbooks.get(incident.name)
        sender = self._sender()
        if runbook is None or incident.host is None or sender is None:
            return
        for step in runbook.diagnostics:
            if not step.auto:
                continue
            bound = bind(runbook, step, incident.labels)
            if bound.argv is None:
                await self._note(incident_id, f"first response skipped {step.name!r}: {bound.unavailable}")
                continue
            request = CommandRequest(
                requester=FIRST_RESPONSE_PRINCIPAL,
                role=self._role,
                host=incident.host,
                command=shlex.join(bound.argv),
                timeout_s=self._timeout_s,
                output_cap_bytes=self._cap,
                incident_id=incident_id,
            )
            try:
                outcome = await submit(db, sender, await host_candidates(db, request.host), request, now=self._clock())
            except Exception:  # one incident's diagnostics must not take the controller down
                log.exception("memory.first_response_failed", incident_id=incident_id, step=step.name)
                continue
            match outcome:
                case Dispatched() | Denied() | AwaitingApproval():
                    pass  # on the incident's timeline already (a denied one is recorded as denied)
                case NeedsCode():  # nobody can give a code for an automatic run (step-up by default, policy.py)
                    await self._note(
                        incident_id,
                        f"first response could not run {step.name!r}: its rule asks for a one-time code; use "
                        f"read-only diagnostics or give that rule of role {self._role!r} `require_2fa: false`",
                    )
                case NotRun(reason):
                    await self._note(incident_id, f"first response could not run {step.name!r}: {reason}")

    async def _note(self, incident_id: int, text: str) -> None:
        await add_timeline_event(
            self._memory.db,
            incident_id,
            kind=TimelineKind.NOTE.value,
            actor=FIRST_RESPONSE_PRINCIPAL,
            data={"text": text, "via": "first-response"},
            now=self._clock(),
        )
