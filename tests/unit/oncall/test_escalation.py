"""Timeline tests of the escalation state machine with an injected clock (Alertmanager acceptance-test style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from teleops.domain.incident import IncidentStatus
from teleops.oncall.escalation import EscalationState, Plan, Snapshot, Step, evaluate, hurried_round_start

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
STEPS = [
    Step(timedelta(0), "rotation:primary"),
    Step(timedelta(minutes=10), "user:carol"),
    Step(timedelta(minutes=20), "chat:ops-room"),
]


def minutes(at: datetime) -> float:
    return (at - T0).total_seconds() / 60


@dataclass
class World:
    """An escalation and its incident, driven the way the worker drives them."""

    steps: list[Step] = field(default_factory=lambda: list(STEPS))
    repeat: int = 0
    remind_after: timedelta = timedelta(hours=1)
    status: IncidentStatus = IncidentStatus.OPEN
    snoozed_until: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    plan: Plan = field(init=False)
    log: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plan = Plan(EscalationState.PAGING, 0, 0, T0, T0 + self.steps[0].after)

    def tick(self, now: datetime) -> None:
        snapshot = Snapshot(
            self.plan.state,
            self.plan.step,
            self.plan.round,
            self.plan.round_started_at,
            self.status,
            self.snoozed_until,
            self.acknowledged_at,
            self.acknowledged_by,
        )
        self.plan = evaluate(snapshot, self.steps, repeat=self.repeat, remind_after=self.remind_after, now=now)
        if self.plan.unsnooze:
            self.status = IncidentStatus.OPEN
            self.snoozed_until = None
            self.log.append((minutes(now), "unsnoozed"))
        self.log.extend((minutes(now), f"notify {target}") for target in self.plan.notify)
        if self.plan.remind:
            self.log.append((minutes(now), f"remind {self.plan.remind}"))

    def run_until(self, end: datetime) -> None:
        """Process every due time up to `end`, as the worker would."""
        while self.plan.due_at is not None and self.plan.due_at <= end:
            self.tick(self.plan.due_at)

    def act(self, now: datetime) -> None:
        """Someone acted on the incident: the worker re-evaluates at once (a nudge)."""
        self.run_until(now)
        self.tick(now)


def at(mins: float) -> datetime:
    return T0 + timedelta(minutes=mins)


def test_no_ack_escalates_step_by_step_then_stops() -> None:
    world = World()
    world.run_until(at(120))
    assert world.log == [(0, "notify rotation:primary"), (10, "notify user:carol"), (20, "notify chat:ops-room")]
    assert world.plan.state is EscalationState.EXHAUSTED
    assert world.plan.due_at is None


def test_ack_at_eleven_minutes_stops_further_steps() -> None:
    world = World()
    world.run_until(at(11))
    world.status, world.acknowledged_at, world.acknowledged_by = IncidentStatus.ACKNOWLEDGED, at(11), "carol"
    world.act(at(11))
    world.run_until(at(59))
    assert world.log == [(0, "notify rotation:primary"), (10, "notify user:carol")]
    assert world.plan.state is EscalationState.ACKED


def test_acked_but_unresolved_reminds_the_acker_every_interval() -> None:
    world = World()
    world.run_until(at(1))
    world.status, world.acknowledged_at, world.acknowledged_by = IncidentStatus.ACKNOWLEDGED, at(1), "alice"
    world.act(at(1))
    world.run_until(at(181))
    assert world.log == [
        (0, "notify rotation:primary"),
        (61, "remind alice"),
        (121, "remind alice"),
        (181, "remind alice"),
    ]


def test_resolution_ends_everything() -> None:
    world = World()
    world.run_until(at(5))
    world.status = IncidentStatus.RESOLVED
    world.act(at(5))
    world.run_until(at(500))
    assert world.log == [(0, "notify rotation:primary")]
    assert world.plan.state is EscalationState.DONE


def test_snooze_pauses_then_paging_restarts_from_the_first_step() -> None:
    world = World()
    world.run_until(at(2))
    world.status, world.snoozed_until = IncidentStatus.SNOOZED, at(32)
    world.act(at(2))
    world.run_until(at(31))
    assert world.log == [(0, "notify rotation:primary")]  # nothing while snoozed (carol's 10m step waits)
    world.run_until(at(45))
    assert world.log == [
        (0, "notify rotation:primary"),
        (32, "unsnoozed"),
        (32, "notify rotation:primary"),
        (42, "notify user:carol"),
    ]


def test_repeat_runs_the_policy_again_after_the_gap() -> None:
    world = World(repeat=1)
    world.run_until(at(100))
    assert world.log == [
        (0, "notify rotation:primary"),
        (10, "notify user:carol"),
        (20, "notify chat:ops-room"),
        (30, "notify rotation:primary"),  # gap = last step's distance from the previous one (10m)
        (40, "notify user:carol"),
        (50, "notify chat:ops-room"),
    ]
    assert world.plan.state is EscalationState.EXHAUSTED


def test_a_nudge_before_the_next_step_sends_nothing() -> None:
    world = World()
    world.run_until(at(0))
    world.act(at(3))  # e.g. a note was added: re-evaluated, nothing due
    assert world.log == [(0, "notify rotation:primary")]
    assert world.plan.due_at == at(10)


def test_a_late_worker_runs_each_missed_step_once() -> None:
    # The controller was down from t=1m to t=25m: on start, each due step runs once, in order.
    world = World()
    world.run_until(at(0))
    world.tick(at(25))
    world.tick(at(25))
    world.run_until(at(25))
    assert [entry[1] for entry in world.log] == ["notify rotation:primary", "notify user:carol", "notify chat:ops-room"]


def test_a_failed_page_makes_the_waiting_next_step_due_now_and_keeps_later_spacing() -> None:
    steps = (Step(timedelta(0), "user:a"), Step(timedelta(minutes=10), "user:b"), Step(timedelta(minutes=30), "user:c"))
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    start = hurried_round_start(
        state=EscalationState.PAGING, step=1, round_=0, steps=steps, failed_step=1, failed_round=0, now=now
    )
    assert start == now - timedelta(minutes=10)  # step 2 due now, step 3 twenty minutes later, as configured
    # Not when the escalation has moved on, is acked, is another round, or the failed step was the last one.
    for state, step, round_, failed_step, failed_round in [
        (EscalationState.PAGING, 2, 0, 1, 0),
        (EscalationState.ACKED, 1, 0, 1, 0),
        (EscalationState.PAGING, 1, 1, 1, 0),
        (EscalationState.EXHAUSTED, 3, 0, 3, 0),
    ]:
        assert (
            hurried_round_start(
                state=state,
                step=step,
                round_=round_,
                steps=steps,
                failed_step=failed_step,
                failed_round=failed_round,
                now=now,
            )
            is None
        )
