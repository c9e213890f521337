"""Escalation as a pure state machine: given an escalation's stored state and its incident, what happens now.

The worker (oncall/worker.py) loads due escalations, asks `evaluate`, and applies the returned `Plan` in
the same transaction as the notifications it causes — so a restart neither loses nor repeats a step.

Rules:
- steps run at `round_started_at + step.after`; after the last step the policy starts again `repeat` times,
  one repeat gap (the last step's `after`, at least 5 minutes) after the last step ran;
- an acknowledged incident stops paging and, `remind_after` later, reminds whoever acked it (then again
  every `remind_after`) until it is resolved;
- a snoozed incident waits until the snooze ends, then is opened again and paging restarts from step 1;
- an incident opened again after an ack (snooze ended) also restarts from step 1;
- a resolved incident ends its escalation.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from teleops.domain.incident import IncidentStatus

__all__ = ["EscalationState", "Plan", "Snapshot", "Step", "evaluate", "hurried_round_start"]

MIN_REPEAT_GAP = timedelta(minutes=5)


class EscalationState(enum.StrEnum):
    PAGING = "paging"
    ACKED = "acked"  # paging stopped; reminders to the acker
    EXHAUSTED = "exhausted"  # every step and repeat ran; nobody acked
    DONE = "done"  # incident resolved


@dataclass(frozen=True, slots=True)
class Step:
    after: timedelta
    notify: str  # rotation:NAME | user:NAME | chat:NAME


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the worker knows: the stored escalation plus its incident's state."""

    state: EscalationState
    step: int
    round: int
    round_started_at: datetime
    incident_status: IncidentStatus
    snoozed_until: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now and what to store. `notify` is empty when nothing is sent."""

    state: EscalationState
    step: int
    round: int
    round_started_at: datetime
    due_at: datetime | None  # None: nothing more to do until someone acts on the incident
    notify: tuple[str, ...] = ()  # targets to page now
    remind: str | None = None  # user to remind (acked but unresolved)
    unsnooze: bool = False  # the snooze ended: open the incident again first
    ran_step: int | None = None  # index of the step that ran now (for the timeline)
    ran_round: int | None = None  # the round that step belongs to


def evaluate(snapshot: Snapshot, steps: Sequence[Step], *, repeat: int, remind_after: timedelta, now: datetime) -> Plan:
    """The plan for an escalation that is due (or was nudged because someone acted on its incident)."""
    s = snapshot
    if s.incident_status is IncidentStatus.RESOLVED or not steps:
        return Plan(EscalationState.DONE, s.step, s.round, s.round_started_at, None)
    if s.incident_status is IncidentStatus.SNOOZED:
        if s.snoozed_until is not None and s.snoozed_until > now:
            return Plan(s.state, s.step, s.round, s.round_started_at, s.snoozed_until)
        return _run_step(0, 0, now, steps, repeat=repeat, now=now, unsnooze=True)
    if s.incident_status is IncidentStatus.ACKNOWLEDGED:
        acked_at = s.acknowledged_at or now
        if s.state is not EscalationState.ACKED:
            return Plan(EscalationState.ACKED, s.step, s.round, s.round_started_at, acked_at + remind_after)
        return Plan(
            EscalationState.ACKED, s.step, s.round, s.round_started_at, now + remind_after, remind=s.acknowledged_by
        )
    # Open.
    if s.state is EscalationState.ACKED:
        return _run_step(0, 0, now, steps, repeat=repeat, now=now)
    if s.state is EscalationState.EXHAUSTED:
        return Plan(EscalationState.EXHAUSTED, s.step, s.round, s.round_started_at, None)
    due = s.round_started_at + steps[min(s.step, len(steps) - 1)].after
    if due > now:  # nudged early: nothing to send yet
        return Plan(s.state, s.step, s.round, s.round_started_at, due)
    return _run_step(s.step, s.round, s.round_started_at, steps, repeat=repeat, now=now)


def _run_step(
    index: int,
    round_: int,
    round_started_at: datetime,
    steps: Sequence[Step],
    *,
    repeat: int,
    now: datetime,
    unsnooze: bool = False,
) -> Plan:
    index = min(index, len(steps) - 1)
    targets = (steps[index].notify,)
    if index + 1 < len(steps):
        return Plan(
            EscalationState.PAGING,
            index + 1,
            round_,
            round_started_at,
            round_started_at + steps[index + 1].after,
            notify=targets,
            unsnooze=unsnooze,
            ran_step=index,
            ran_round=round_,
        )
    if round_ < repeat:
        gap = max(steps[-1].after - (steps[-2].after if len(steps) > 1 else timedelta(0)), MIN_REPEAT_GAP)
        next_start = now + gap
        return Plan(
            EscalationState.PAGING,
            0,
            round_ + 1,
            next_start,
            next_start + steps[0].after,
            notify=targets,
            unsnooze=unsnooze,
            ran_step=index,
            ran_round=round_,
        )
    return Plan(
        EscalationState.EXHAUSTED,
        index + 1,
        round_,
        round_started_at,
        None,
        notify=targets,
        unsnooze=unsnooze,
        ran_step=index,
        ran_round=round_,
    )


def hurried_round_start(
    *,
    state: EscalationState,
    step: int,
    round_: int,
    steps: Sequence[Step],
    failed_step: int,
    failed_round: int,
    now: datetime,
) -> datetime | None:
    """A page of step `failed_step` (1-based) in `failed_round` reached nobody: when the escalation still waits for
    the step after it, the round start that makes that step due now (later steps keep their spacing); else None.

    Only within a round: when the last step fails, the next round starts after its repeat gap as usual, so a
    platform that refuses everything cannot make the escalation loop as fast as it can fail.
    """
    if state is not EscalationState.PAGING or round_ != failed_round or step != failed_step or step >= len(steps):
        return None
    return now - steps[step].after
