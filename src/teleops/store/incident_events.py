"""Who hears of an incident's change, and when: one object, built once by the composition root (server/app.py),
handed to the ingest writer and to every `act_on_incident`, and subscribed to by the parts that react (the chat
notifier, the escalation worker, the Alertmanager silence writer, first responders).

Two kinds of change, each with named phases that run in this order:

Alerts (a batch of the ingest writer, store/ingest.py):
  1. `in_transaction(conn, changes, now)` — inside the batch's transaction: rows written here (outbox messages,
     escalations) commit or roll back with the incidents, so nothing acknowledged to a sender is lost.
  2. `committed(changes)` — committed, not yet known to be on disk: a worker may prepare, but must not act
     outside the database before the fsync (the outbox hand-off waits for it).
  3. `durable(changes)` — on disk and answered: act outside (wake the escalation, run a first response).

People's actions (ack, resolve, snooze, unsnooze — from REST, the web UI and chat, store/incidents.py):
  1. `in_transaction(conn, incident_id, action, actor, now, snooze_until)` — inside the action's transaction.
  2. `committed()` — after the commit (wake the workers that read what phase 1 wrote).

Subscribers run in the order they subscribed. A subscriber's exception in phase 1 rolls the change back (the
caller gets it); in the later phases it propagates to the caller after the commit, as before this object existed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.engine import Connection

from teleops.domain.incident import IncidentAction
from teleops.store.ingest_batch import IncidentChange

__all__ = ["ActionHook", "ChangeHook", "IncidentEvents"]

# Inside the ingest transaction: (conn, the batch's changes, the batch's clock reading).
ChangeHook = Callable[[Connection, Sequence[IncidentChange], datetime], None]
# Inside act_on_incident's transaction: (conn, incident id, action, actor, now, snooze_until).
ActionHook = Callable[[Connection, int, IncidentAction, str, datetime, datetime | None], None]
Changes = Callable[[Sequence[IncidentChange]], None]


class IncidentEvents:
    """The subscribers to incident changes, by kind and phase (see the module docstring)."""

    def __init__(self) -> None:
        self._alerts_in_transaction: list[ChangeHook] = []
        self._alerts_committed: list[Changes] = []
        self._alerts_durable: list[Changes] = []
        self._action_in_transaction: list[ActionHook] = []
        self._action_committed: list[Callable[[], None]] = []

    # -- subscribing (the composition root, at start) --------------------------------------------------

    def on_alerts(
        self,
        *,
        in_transaction: ChangeHook | None = None,
        committed: Changes | None = None,
        durable: Changes | None = None,
    ) -> None:
        if in_transaction is not None:
            self._alerts_in_transaction.append(in_transaction)
        if committed is not None:
            self._alerts_committed.append(committed)
        if durable is not None:
            self._alerts_durable.append(durable)

    def on_action(
        self, *, in_transaction: ActionHook | None = None, committed: Callable[[], None] | None = None
    ) -> None:
        if in_transaction is not None:
            self._action_in_transaction.append(in_transaction)
        if committed is not None:
            self._action_committed.append(committed)

    # -- publishing (the store, at each phase) ---------------------------------------------------------

    def alerts_in_transaction(self, conn: Connection, changes: Sequence[IncidentChange], now: datetime) -> None:
        for hook in self._alerts_in_transaction:
            hook(conn, changes, now)

    def alerts_committed(self, changes: Sequence[IncidentChange]) -> None:
        for hook in self._alerts_committed:
            hook(changes)

    def alerts_durable(self, changes: Sequence[IncidentChange]) -> None:
        for hook in self._alerts_durable:
            hook(changes)

    def action_in_transaction(
        self,
        conn: Connection,
        incident_id: int,
        action: IncidentAction,
        actor: str,
        now: datetime,
        snooze_until: datetime | None,
    ) -> None:
        for hook in self._action_in_transaction:
            hook(conn, incident_id, action, actor, now, snooze_until)

    def action_committed(self) -> None:
        for hook in self._action_committed:
            hook()
