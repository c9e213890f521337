"""Escalation timers: one row per incident under escalation, with the due time the worker acts on.

All functions take a Connection: they run inside the caller's transaction, so a step, its notifications
and the advanced timer commit together (a restart neither loses nor repeats a step).

Several replicas on one PostgreSQL (issue #23): a due escalation is claimed by locking its row (`FOR UPDATE SKIP
LOCKED`) in the pass's transaction, and the step's pages, its timeline and its next due time commit in that same
transaction. The claim is therefore the transaction, and its lease is the database session: a replica killed
mid-pass loses its connection and the server rolls the pass back at once (the step stays due and another replica
runs it, once); a replica frozen mid-pass (SIGSTOP) leaves its transaction idle, and `hold_pass` has the server end
it after PASS_IDLE_LIMIT_S, so its locks go and another replica runs the step, while the frozen one's commit fails
when it wakes (nothing doubled). Nothing of a step is sent before that commit: its pages are outbox rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Connection

from teleops.store.schema import escalations, identities, incidents, timeline, users

__all__ = [
    "PASS_IDLE_LIMIT_S",
    "DueEscalation",
    "EscalationNow",
    "add_event",
    "admin_users",
    "due_escalations",
    "escalation_now",
    "hold_pass",
    "hurry",
    "linked_chats",
    "next_due_at",
    "nudge",
    "reopen_after_snooze",
    "save_plan",
    "start",
]


# How long the server lets an escalation pass's transaction wait for its replica between two statements before it
# ends the session (PostgreSQL): a pass sends its statements back to back, so only a stalled replica gets near it.
PASS_IDLE_LIMIT_S = 5


def hold_pass(conn: Connection) -> None:
    """First in an escalation pass's transaction (PostgreSQL): the rows it locks are released PASS_IDLE_LIMIT_S after
    this replica stops talking to the server (frozen, or its host cut off), the lease of its claims; its late commit
    then fails. SQLite has one process and no such lease."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = '{int(PASS_IDLE_LIMIT_S)}s'"))


@dataclass(frozen=True, slots=True)
class DueEscalation:
    id: int
    incident_id: int
    team: str
    state: str
    step: int
    round: int
    round_started_at: datetime
    incident: dict[str, Any]


def start(conn: Connection, *, incident_id: int, team: str, now: datetime, first_due: datetime) -> None:
    """Begin escalating `incident_id` for `team` (state paging, step 0)."""
    conn.execute(
        insert(escalations).values(
            incident_id=incident_id,
            team=team,
            state="paging",
            step=0,
            round=0,
            round_started_at=now,
            due_at=first_due,
            updated_at=now,
        )
    )


def nudge(conn: Connection, incident_id: int, now: datetime) -> None:
    """Someone acted on the incident: re-evaluate its escalation now (ack stops, snooze pauses, …)."""
    conn.execute(
        update(escalations)
        .where(escalations.c.incident_id == incident_id, escalations.c.state != "done")
        .values(due_at=now, updated_at=now)
    )


def due_escalations(conn: Connection, now: datetime, *, limit: int = 100) -> list[DueEscalation]:
    """Escalations due by `now`, with their incident. On PostgreSQL rows are locked, skipping those another
    replica is processing (`FOR UPDATE SKIP LOCKED`): the claim, held until the caller's transaction ends
    (`hold_pass` bounds it for a stalled replica); SQLite has a single writer."""
    query = (
        select(escalations, incidents)
        .join(incidents, incidents.c.id == escalations.c.incident_id)
        .where(escalations.c.due_at.is_not(None), escalations.c.due_at <= now)
        .order_by(escalations.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=escalations)
    rows = conn.execute(query).mappings().all()
    result = []
    for row in rows:
        incident = {column.name: row[incidents.c[column.name]] for column in incidents.c}
        result.append(
            DueEscalation(
                id=row[escalations.c.id],
                incident_id=row[escalations.c.incident_id],
                team=row[escalations.c.team],
                state=row[escalations.c.state],
                step=row[escalations.c.step],
                round=row[escalations.c.round],
                round_started_at=row[escalations.c.round_started_at],
                incident=incident,
            )
        )
    return result


def save_plan(
    conn: Connection,
    escalation_id: int,
    *,
    state: str,
    step: int,
    round_: int,
    round_started_at: datetime,
    due_at: datetime | None,
    now: datetime,
) -> None:
    conn.execute(
        update(escalations)
        .where(escalations.c.id == escalation_id)
        .values(state=state, step=step, round=round_, round_started_at=round_started_at, due_at=due_at, updated_at=now)
    )


def next_due_at(conn: Connection) -> datetime | None:
    """The earliest due time of any escalation (the worker sleeps until then)."""
    value: datetime | None = conn.execute(select(func.min(escalations.c.due_at))).scalar()
    return value


def add_event(conn: Connection, incident_id: int, now: datetime, kind: str, data: dict[str, Any]) -> None:
    conn.execute(insert(timeline).values(incident_id=incident_id, at=now, kind=kind, actor="teleops", data=data))


def linked_chats(conn: Connection, user_name: str) -> list[tuple[str, str]]:
    """(platform, external id) of every chat identity `user_name` linked at runtime (`/link CODE`)."""
    rows = conn.execute(
        select(identities.c.platform, identities.c.external_id).where(identities.c.user_name == user_name)
    ).all()
    return [(row.platform, row.external_id) for row in rows]


def reopen_after_snooze(conn: Connection, incident_id: int, now: datetime) -> None:
    """The snooze ended: the incident is open again (and says so on its timeline)."""
    conn.execute(
        update(incidents)
        .where(incidents.c.id == incident_id, incidents.c.status == "snoozed")
        .values(status="open", snoozed_until=None)
    )
    add_event(conn, incident_id, now, "incident.unsnoozed", {"reason": "snooze ended"})


@dataclass(frozen=True, slots=True)
class EscalationNow:
    """An escalation's stored position, read when one of its pages failed."""

    id: int
    team: str
    state: str
    step: int
    round: int


def escalation_now(conn: Connection, escalation_id: int) -> EscalationNow | None:
    row = conn.execute(select(escalations).where(escalations.c.id == escalation_id)).mappings().first()
    if row is None:
        return None
    return EscalationNow(row["id"], row["team"], row["state"], row["step"], row["round"])


def hurry(conn: Connection, escalation_id: int, *, round_started_at: datetime, now: datetime) -> None:
    """Run the escalation's next step now: its round is moved back so the step is due (later steps follow it)."""
    conn.execute(
        update(escalations)
        .where(escalations.c.id == escalation_id, escalations.c.state == "paging")
        .values(round_started_at=round_started_at, due_at=now, updated_at=now)
    )


def admin_users(conn: Connection, configured: list[str]) -> list[str]:
    """Admins: those the config names with role admin, and those `teleops user` made admins."""
    stored = conn.execute(select(users.c.name).where(users.c.role == "admin")).scalars().all()
    return list(dict.fromkeys([*configured, *stored]))
